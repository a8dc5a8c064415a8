// Softmax cross-entropy (forward and backward fused) and top-k accuracy on CUDA. A warp per row:
// the lanes stride over the classes (coalesced loads) and combine through shuffles in a fixed
// order. A block's warps take consecutive rows, so a batch spreads over several SMs (one block of
// 1024 threads, four rows per warp, took 15 us for 128 rows on an H100, each warp's rows one
// after another); the rows' losses and counts are added per warp in row order, over the block's
// warps in warp order, and over the blocks in a fixed order by the last block to finish, so the
// results do not depend on timing and need one launch. Logits and their gradient are float or
// bf16 (T); the loss is float32.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.h"

namespace psgd::cuda {
namespace {

constexpr int kRowWarps = kThreads / kWarp;
// At most a warp per row up to 8192 rows, beyond which the warps take several.
constexpr unsigned kMaxRowBlocks = 1024;

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(
      std::clamp<int64_t>((rows + kRowWarps - 1) / kRowWarps, 1, kMaxRowBlocks));
}

// The blocks' partial sums of a row kernel (two per block) and their ticket (last_to_arrive):
// the loss and count kernels run one at a time on a device's stream. Counts below 2^53 are exact
// in double.
__device__ double row_partials[2 * kMaxRowBlocks];
__device__ unsigned row_ticket;

// The rows of the block's warp: the first, and the step to the next.
__device__ int64_t first_row() {
  return blockIdx.x * int64_t{kRowWarps} + threadIdx.x / kWarp;
}
__device__ int64_t row_step() {
  return int64_t{gridDim.x} * kRowWarps;
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

// The grid's totals of the blocks' `partial` values (thread 0's), added in a fixed order
// (warp_sum_of), for the first warp of the last block to finish; false in every other thread,
// which then returns.
template <int count>
__device__ bool grid_totals(const double (&partial)[count], double (&total)[count]) {
  static_assert(count <= 2, "row_partials holds two values per block");
  if (threadIdx.x == 0)
    for (int v = 0; v < count; ++v) row_partials[v * kMaxRowBlocks + blockIdx.x] = partial[v];
  if (!last_to_arrive(&row_ticket, gridDim.x) || threadIdx.x >= kWarp) return false;
  for (int v = 0; v < count; ++v)
    total[v] = warp_sum_of<double>(
        gridDim.x, [&](int64_t b) { return __ldcg(row_partials + v * kMaxRowBlocks + b); });
  return true;
}

// A label outside [0, K) makes the loss NaN, which the trainer stops on.
template <class T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(const T* z, const int32_t* y, int64_t n, int64_t k, float* loss, T* dz) {
  await_prior_grids();
  const int lane = threadIdx.x % kWarp;
  const double inv_n = 1.0 / static_cast<double>(n);
  double total = 0.0;  // this warp's rows
  for (int64_t i = first_row(); i < n; i += row_step()) {
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
  double sum[1];
  if (grid_totals({warps_total(total)}, sum) && threadIdx.x == 0)
    *loss = static_cast<float>(sum[0] * inv_n);
}

// Rows whose label is among the `top` largest logits (no other class scoring at least as high
// among the top - 1 rivals), counted per warp; a label outside [0, K) never counts.
template <class T>
__device__ unsigned long long warp_topk_count(const T* z, const int32_t* y, int64_t n, int64_t k,
                                              int top) {
  const int lane = threadIdx.x % kWarp;
  unsigned long long count = 0;
  for (int64_t i = first_row(); i < n; i += row_step()) {
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
__global__ void __launch_bounds__(kThreads)
    topk_kernel(const T* z, const int32_t* y, int64_t n, int64_t k, int top,
                unsigned long long* correct) {
  await_prior_grids();
  double count[1];
  if (grid_totals({static_cast<double>(warps_total(warp_topk_count(z, y, n, k, top)))}, count) &&
      threadIdx.x == 0)
    *correct = static_cast<unsigned long long>(count[0]);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    metrics_kernel(const T* z, const int32_t* y, int64_t n, int64_t k, const float* loss,
                   double* totals) {
  await_prior_grids();
  const unsigned long long correct = warps_total(warp_topk_count(z, y, n, k, 1));
  const unsigned long long correct5 = warps_total(warp_topk_count(z, y, n, k, k < 5 ? int(k) : 5));
  double counts[2];
  if (!grid_totals({static_cast<double>(correct), static_cast<double>(correct5)}, counts) ||
      threadIdx.x != 0)
    return;
  totals[ops::kMetricLossSum] += static_cast<double>(*loss) * static_cast<double>(n);
  totals[ops::kMetricCorrect] += counts[0];
  totals[ops::kMetricCorrectTop5] += counts[1];
  totals[ops::kMetricSamples] += static_cast<double>(n);
}

}  // namespace

void softmax_cross_entropy(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                           const Tensor& dlogits) {
  with_activation_type(logits.dtype, [&](auto t) {
    using T = decltype(t);
    PSGD_LAUNCH(cross_entropy_kernel<T>, row_blocks(logits.shape[0]), kThreads)
    (logits.as<T>(), labels.i32(), logits.shape[0], logits.shape[1], loss.f32(), dlogits.as<T>());
  });
  CUDA_CHECK_LAUNCH();
}

void accumulate_metrics(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                        const Tensor& totals) {
  with_activation_type(logits.dtype, [&](auto t) {
    PSGD_LAUNCH(metrics_kernel<decltype(t)>, row_blocks(logits.shape[0]), kThreads)
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
    PSGD_LAUNCH(topk_kernel<decltype(t)>, row_blocks(logits.shape[0]), kThreads)
    (logits.as<decltype(t)>(), labels.i32(), logits.shape[0], logits.shape[1], k, device);
  });
  CUDA_CHECK_LAUNCH();
  unsigned long long host = 0;
  CUDA_CHECK(cudaMemcpy(&host, device, sizeof host, cudaMemcpyDeviceToHost));
  return static_cast<int64_t>(host);
}

}  // namespace psgd::cuda
