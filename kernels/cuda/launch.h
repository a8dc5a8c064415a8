// Launch helpers shared by the CUDA kernels: the launch itself, dynamic shared memory, grid-stride
// loops over n elements. The first two also have a form for the CPU emulation of CUDA that CI
// runs the GPU suites on (tests/cuda_emulator).
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/cuda_check.h"

namespace psgd::cuda {

// PSGD_LAUNCH(kernel, grid, block[, shared bytes])(args...) launches kernel<<<...>>>(args...).
#ifdef PSGD_CUDA_EMULATION
#define PSGD_LAUNCH(kernel, ...) \
  ::psgd::emu::Launch(#kernel, __VA_ARGS__)([](auto... args) { kernel(args...); })
#else
#define PSGD_LAUNCH(kernel, ...) kernel<<<__VA_ARGS__>>>
#endif

// The launch's dynamic shared memory (its third launch argument) as an array of T.
template <class T>
__device__ T* dynamic_shared() {
#ifdef PSGD_CUDA_EMULATION
  return static_cast<T*>(::psgd::emu::dynamic_shared_memory());
#else
  extern __shared__ __align__(16) unsigned char bytes[];
  return reinterpret_cast<T*>(bytes);
#endif
}

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
  PSGD_LAUNCH(for_each_kernel, blocks_for(n), kThreads)(n, f);
  CUDA_CHECK_LAUNCH();
}

}  // namespace psgd::cuda
