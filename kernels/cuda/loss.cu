// Softmax cross-entropy (forward and backward fused) and top-k accuracy on CUDA. One block of
// 1024 threads, a warp per row: the lanes stride over the classes (coalesced loads) and combine
// through shuffles in a fixed order; the rows' losses and counts are added per warp in row order
// and then over the warps in warp order, so the results do not depend on timing. A batch's few
// hundred rows fill the block; one block, not one per row group, keeps the totals in one launch.
// Logits and their gradient are float or bf16 (T); the loss is float32.
#include <cmath>
#include <map>
#include <mutex>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace psgd::cuda {
namespace {

constexpr int kRowThreads = 1024;
constexpr int kWarp = 32;
constexpr int kRowWarps = kRowThreads / kWarp;
constexpr unsigned kAllLanes = 0xffffffffu;

// The warp's values combined by `op` down a fixed tree to lane 0, then given to every lane.
template <class V, class Op>
__device__ V warp_combine(V v, Op op) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v = op(v, __shfl_down_sync(kAllLanes, v, offset));
  return __shfl_sync(kAllLanes, v, 0);
}

__device__ float warp_max(float v) {
  return warp_combine(v, [](float a, float b) { return fmaxf(a, b); });
}

template <class V>
__device__ V warp_sum(V v) {
  return warp_combine(v, [](V a, V b) { return a + b; });
}

// The sum over the block's warps of each warp's `value`, in warp order, for thread 0.
template <class V>
__device__ V warps_total(V value) {
  __shared__ V per_warp[kRowWarps];
  if (threadIdx.x % kWarp == 0) per_warp[threadIdx.x / kWarp] = value;
  __syncthreads();
  V total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kRowWarps; ++w) total += per_warp[w];
  __syncthreads();  // per_warp may be filled again
  return total;
}

// A label outside [0, K) makes the loss NaN, which the trainer stops on.
template <class T>
__global__ void __launch_bounds__(kRowThreads)
    cross_entropy_kernel(const T* z, const int32_t* y, int64_t n, int64_t k, float* loss, T* dz) {
  await_prior_grids();
  const int lane = threadIdx.x % kWarp;
  const double inv_n = 1.0 / static_cast<double>(n);
  double total = 0.0;  // this warp's rows
  for (int64_t i = threadIdx.x / kWarp; i < n; i += kRowWarps) {
    const T* row = z + i * k;
    const int32_t label = y[i];
    if (label < 0 || label >= k) {
      total += NAN;
      continue;
    }
    float top = -INFINITY;
    for (int64_t j = lane; j < k; j += kWarp) top = fmaxf(top, load(row, j));
    top = warp_max(top);
    double sum = 0.0;
    for (int64_t j = lane; j < k; j += kWarp) sum += exp(static_cast<double>(load(row, j) - top));
    const double log_sum = top + log(warp_sum(sum));
    total += log_sum - load(row, label);
    for (int64_t j = lane; j < k; j += kWarp)
      store(dz, i * k + j,
            static_cast<float>((exp(load(row, j) - log_sum) - (j == label ? 1.0 : 0.0)) * inv_n));
  }
  total = warps_total(total);
  if (threadIdx.x == 0) *loss = static_cast<float>(total * inv_n);
}

// Rows whose label is among the `top` largest logits (no other class scoring at least as high
// among the top - 1 rivals), counted per warp; a label outside [0, K) never counts.
template <class T>
__device__ unsigned long long warp_topk_count(const T* z, const int32_t* y, int64_t n, int64_t k,
                                              int top) {
  const int lane = threadIdx.x % kWarp;
  unsigned long long count = 0;
  for (int64_t i = threadIdx.x / kWarp; i < n; i += kRowWarps) {
    const T* row = z + i * k;
    const int32_t label = y[i];
    if (label < 0 || label >= k) continue;
    const float score = load(row, label);
    int rivals = 0;
    for (int64_t j = lane; j < k; j += kWarp) rivals += (j != label && !(load(row, j) < score));
    count += warp_sum(rivals) < top;
  }
  return count;
}

template <class T>
__global__ void __launch_bounds__(kRowThreads)
    topk_kernel(const T* z, const int32_t* y, int64_t n, int64_t k, int top,
                unsigned long long* correct) {
  await_prior_grids();
  const unsigned long long count = warps_total(warp_topk_count(z, y, n, k, top));
  if (threadIdx.x == 0) *correct = count;
}

template <class T>
__global__ void __launch_bounds__(kRowThreads)
    metrics_kernel(const T* z, const int32_t* y, int64_t n, int64_t k, const float* loss,
                   double* totals) {
  await_prior_grids();
  const unsigned long long correct = warps_total(warp_topk_count(z, y, n, k, 1));
  const unsigned long long correct5 = warps_total(warp_topk_count(z, y, n, k, k < 5 ? int(k) : 5));
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
    PSGD_LAUNCH(cross_entropy_kernel<T>, 1, kRowThreads)
    (logits.as<T>(), labels.i32(), logits.shape[0], logits.shape[1], loss.f32(), dlogits.as<T>());
  });
  CUDA_CHECK_LAUNCH();
}

void accumulate_metrics(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                        const Tensor& totals) {
  with_activation_type(logits.dtype, [&](auto t) {
    PSGD_LAUNCH(metrics_kernel<decltype(t)>, 1, kRowThreads)
    (logits.as<decltype(t)>(), labels.i32(), logits.shape[0], logits.shape[1], loss.f32(),
     totals.f64());
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
    PSGD_LAUNCH(topk_kernel<decltype(t)>, 1, kRowThreads)
    (logits.as<decltype(t)>(), labels.i32(), logits.shape[0], logits.shape[1], k, device);
  });
  CUDA_CHECK_LAUNCH();
  unsigned long long host = 0;
  CUDA_CHECK(cudaMemcpy(&host, device, sizeof host, cudaMemcpyDeviceToHost));
  return static_cast<int64_t>(host);
}

}  // namespace psgd::cuda
