// Softmax cross-entropy (forward and backward fused) and top-k accuracy on CUDA. One block of
// threads walks the rows; the mean loss and the count are block reductions (deterministic).
// Logits and their gradient are float or bf16 (T); the loss is float32.
#include <cmath>
#include <map>
#include <mutex>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/reduce.h"

namespace psgd::cuda {
namespace {

// A label outside [0, K) makes the loss NaN, which the trainer stops on.
template <class T>
__global__ void cross_entropy_kernel(const T* z, const int32_t* y, int64_t n, int64_t k,
                                     float* loss, T* dz) {
  const double inv_n = 1.0 / static_cast<double>(n);
  double total = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const T* row = z + i * k;
    const int32_t label = y[i];
    if (label < 0 || label >= k) {
      total += NAN;
      continue;
    }
    float top = load(row, 0);
    for (int64_t j = 1; j < k; ++j) top = fmaxf(top, load(row, j));
    double sum = 0.0;
    for (int64_t j = 0; j < k; ++j) sum += exp(static_cast<double>(load(row, j) - top));
    const double log_sum = top + log(sum);
    total += log_sum - load(row, label);
    for (int64_t j = 0; j < k; ++j)
      store(dz, i * k + j,
            static_cast<float>((exp(load(row, j) - log_sum) - (j == label ? 1.0 : 0.0)) * inv_n));
  }
  total = block_sum(total);
  if (threadIdx.x == 0) *loss = static_cast<float>(total * inv_n);
}

// Rows whose label is among the `top` largest logits, counted over the block; every thread gets
// the count.
template <class T>
__device__ unsigned long long block_topk_count(const T* z, const int32_t* y, int64_t n, int64_t k,
                                               int top) {
  unsigned long long count = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const T* row = z + i * k;
    const int32_t label = y[i];
    if (label < 0 || label >= k) continue;
    const float score = load(row, label);
    int64_t rivals = 0;
    for (int64_t j = 0; j < k; ++j) rivals += (j != label && !(load(row, j) < score));
    count += rivals < top;
  }
  return block_sum(count);
}

template <class T>
__global__ void topk_kernel(const T* z, const int32_t* y, int64_t n, int64_t k, int top,
                            unsigned long long* correct) {
  const unsigned long long count = block_topk_count(z, y, n, k, top);
  if (threadIdx.x == 0) *correct = count;
}

template <class T>
__global__ void metrics_kernel(const T* z, const int32_t* y, int64_t n, int64_t k,
                               const float* loss, double* totals) {
  const unsigned long long correct = block_topk_count(z, y, n, k, 1);
  const unsigned long long correct5 = block_topk_count(z, y, n, k, k < 5 ? int(k) : 5);
  if (threadIdx.x == 0) {
    totals[ops::kMetricLossSum] += static_cast<double>(*loss) * static_cast<double>(n);
    totals[ops::kMetricCorrect] += static_cast<double>(correct);
    totals[ops::kMetricCorrectTop5] += static_cast<double>(correct5);
    totals[ops::kMetricSamples] += static_cast<double>(n);
  }
}

}  // namespace

void softmax_cross_entropy(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                           const Tensor& dlogits) {
  with_activation_type(logits.dtype, [&](auto t) {
    using T = decltype(t);
    cross_entropy_kernel<<<1, kThreads>>>(logits.as<T>(), labels.i32(), logits.shape[0],
                                          logits.shape[1], loss.f32(), dlogits.as<T>());
  });
  CUDA_CHECK_LAUNCH();
}

void accumulate_metrics(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                        const Tensor& totals) {
  with_activation_type(logits.dtype, [&](auto t) {
    metrics_kernel<<<1, kThreads>>>(logits.as<decltype(t)>(), labels.i32(), logits.shape[0],
                                    logits.shape[1], loss.f32(), totals.f64());
  });
  CUDA_CHECK_LAUNCH();
}

int64_t topk_correct(const Tensor& logits, const Tensor& labels, int k) {
  // One counter per GPU, allocated at the first call there, never inside later steps.
  static std::mutex mutex;
  static std::map<int, unsigned long long*> counters;
  int gpu = 0;
  CUDA_CHECK(cudaGetDevice(&gpu));
  unsigned long long* device = nullptr;
  {
    std::lock_guard lock(mutex);
    unsigned long long*& slot = counters[gpu];
    if (!slot) CUDA_CHECK(cudaMalloc(&slot, sizeof *slot));
    device = slot;
  }
  with_activation_type(logits.dtype, [&](auto t) {
    topk_kernel<<<1, kThreads>>>(logits.as<decltype(t)>(), labels.i32(), logits.shape[0],
                                 logits.shape[1], k, device);
  });
  CUDA_CHECK_LAUNCH();
  unsigned long long host = 0;
  CUDA_CHECK(cudaMemcpy(&host, device, sizeof host, cudaMemcpyDeviceToHost));
  return static_cast<int64_t>(host);
}

}  // namespace psgd::cuda
