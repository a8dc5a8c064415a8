// Softmax cross-entropy (forward and backward in one pass) and top-k accuracy on the CPU.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace psgd::cpu {
namespace {

template <class T>
float softmax_cross_entropy_rows(const Tensor& logits, const Tensor& labels,
                                 const Tensor& dlogits) {
  const int64_t n = logits.shape[0], k = logits.shape[1];
  const T* z = logits.as<T>();
  const int32_t* y = labels.i32();
  T* dz = dlogits.as<T>();
  const double inv_n = 1.0 / static_cast<double>(n);
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = z + i * k;
    float top = load(row, 0);
    for (int64_t j = 1; j < k; ++j) top = std::fmax(top, load(row, j));
    double sum = 0.0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(load(row, j) - top));
    const double log_sum = top + std::log(sum);
    total += log_sum - load(row, y[i]);
    for (int64_t j = 0; j < k; ++j) {
      const double prob = std::exp(load(row, j) - log_sum);
      store(dz, i * k + j, static_cast<float>((prob - (j == y[i] ? 1.0 : 0.0)) * inv_n));
    }
  }
  return static_cast<float>(total * inv_n);
}

template <class T>
int64_t topk_correct_rows(const Tensor& logits, const Tensor& labels, int k) {
  const int64_t n = logits.shape[0], classes = logits.shape[1];
  const T* z = logits.as<T>();
  const int32_t* y = labels.i32();
  int64_t correct = 0;
#pragma omp parallel for reduction(+ : correct) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = z + i * classes;
    const float mine = load(row, y[i]);
    int64_t rivals = 0;  // other classes scoring at least as high
    for (int64_t j = 0; j < classes; ++j) rivals += (j != y[i] && !(load(row, j) < mine));
    correct += rivals < k;
  }
  return correct;
}

}  // namespace

void softmax_cross_entropy(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                           const Tensor& dlogits) {
  loss.f32()[0] = with_activation_type(logits.dtype, [&](auto t) {
    return softmax_cross_entropy_rows<decltype(t)>(logits, labels, dlogits);
  });
}

int64_t topk_correct(const Tensor& logits, const Tensor& labels, int k) {
  return with_activation_type(
      logits.dtype, [&](auto t) { return topk_correct_rows<decltype(t)>(logits, labels, k); });
}

void accumulate_metrics(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                        const Tensor& totals) {
  const int64_t n = logits.shape[0];
  double* t = totals.f64();
  t[ops::kMetricLossSum] += static_cast<double>(loss.f32()[0]) * static_cast<double>(n);
  t[ops::kMetricCorrect] += static_cast<double>(topk_correct(logits, labels, 1));
  const int top5 = static_cast<int>(std::min<int64_t>(5, logits.shape[1]));
  t[ops::kMetricCorrectTop5] += static_cast<double>(topk_correct(logits, labels, top5));
  t[ops::kMetricSamples] += static_cast<double>(n);
}

}  // namespace psgd::cpu
