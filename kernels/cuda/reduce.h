// Deterministic block reductions: each block folds its values in a fixed order, so results do
// not depend on timing (no atomics).
#pragma once

#include "engine/bfloat16.h"
#include "kernels/cuda/launch.h"

namespace psgd::cuda {

// Sums `value` over the block (blockDim.x must be kThreads); every thread gets the total.
template <class T>
__device__ T block_sum(T value) {
  __shared__ T partial[kThreads];
  partial[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const T total = partial[0];
  __syncthreads();
  return total;
}

// The min and max of x[0, n) (float or bf16) over the block (NaN ignored, as fminf/fmaxf); every
// thread gets both.
template <class T>
__device__ void block_min_max(const T* x, int64_t n, float& lo, float& hi) {
  __shared__ float low[kThreads], high[kThreads];
  float mine_lo = INFINITY, mine_hi = -INFINITY;
  // Unrolled so that each thread has several loads in flight: one block streams a whole range.
#pragma unroll 8
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = load(x, i);
    mine_lo = fminf(mine_lo, v);
    mine_hi = fmaxf(mine_hi, v);
  }
  low[threadIdx.x] = mine_lo;
  high[threadIdx.x] = mine_hi;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      low[threadIdx.x] = fminf(low[threadIdx.x], low[threadIdx.x + stride]);
      high[threadIdx.x] = fmaxf(high[threadIdx.x], high[threadIdx.x + stride]);
    }
    __syncthreads();
  }
  lo = low[0];
  hi = high[0];
  __syncthreads();
}

}  // namespace psgd::cuda
