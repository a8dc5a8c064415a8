// Launch helpers shared by the CUDA kernels: grid-stride loops over n elements.
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/cuda_check.h"

namespace psgd::cuda {

inline constexpr int kThreads = 256;
inline constexpr int64_t kMaxBlocks = 65535;

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

// Runs f(i) for every i in [0, n) on the default stream, then checks the launch.
template <class F>
__global__ void for_each_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    f(i);
}

template <class F>
void for_each(int64_t n, F f) {
  if (n == 0) return;
  for_each_kernel<<<blocks_for(n), kThreads>>>(n, f);
  CUDA_CHECK_LAUNCH();
}

}  // namespace psgd::cuda
