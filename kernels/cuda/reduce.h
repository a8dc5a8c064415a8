// Deterministic block reductions: each block folds its values in a fixed order, so results do
// not depend on timing (no atomics).
#pragma once

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

}  // namespace psgd::cuda
