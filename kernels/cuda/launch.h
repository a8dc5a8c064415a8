// Launch helpers shared by the CUDA kernels: programmatic dependent launch, the launch itself,
// dynamic shared memory, grid-stride loops over n elements. The first three also have a form for
// the CPU emulation of CUDA that CI runs the GPU suites on (tests/cuda_emulator).
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "engine/cuda_check.h"

namespace psgd::cuda {

// ---- Programmatic dependent launch ---------------------------------------------------------
// From Hopper (compute capability 9.0) on, each of our kernels is launched as a programmatic
// dependent of the kernel before it in the stream: its blocks are scheduled as that kernel's last
// ones run, instead of after it has ended, which hides the launch gap between the short kernels of
// a step. So every kernel begins with await_prior_grids(), before it touches global memory, in
// every thread: it waits until the kernels before it have finished and their writes are visible
// (each kernel waited for its own predecessor, so the wait covers the whole stream before it),
// then lets the next kernel's blocks be scheduled. Launches of cuDNN's, cuBLAS's or NCCL's (which
// never start before our kernels end, unless launched as dependents, which then wait by the same
// contract) and copies keep the usual full ordering; our kernels after theirs start when theirs
// end, or trigger. PSGD_PDL=0 in the environment launches ours as ordinary kernels.

// Whether launches on the current device are programmatic dependents: a card of compute
// capability 9.0 on, a driver that captures them in graphs (CUDA 12.3 on), kernels compiled for
// such a card (a build for older ones runs there as a JIT of PTX without the waits), and
// PSGD_PDL not 0 (launch.cu).
bool dependent_launches();

__device__ inline void await_prior_grids() {
#ifdef PSGD_CUDA_EMULATION
  ::psgd::emu::await_prior_grids();
#elif __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// PSGD_LAUNCH(kernel, grid, block[, shared bytes])(args...) launches kernel(args...) on the
// per-thread default stream. A kernel template is named with all its arguments, in parentheses
// where they hold a comma: PSGD_LAUNCH((k<T, U>), grid, block).
#ifdef PSGD_CUDA_EMULATION
#define PSGD_LAUNCH(kernel, ...)                                   \
  ::psgd::emu::Launch(#kernel, ::psgd::cuda::dependent_launches(), \
                      __VA_ARGS__)([](auto... args) { kernel(args...); })
#else
#define PSGD_LAUNCH(kernel, ...) ::psgd::cuda::KernelLaunch(kernel, __VA_ARGS__)

template <class... Params>
class KernelLaunch {
 public:
  KernelLaunch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes = 0)
      : kernel_(kernel), grid_(grid), block_(block), shared_bytes_(shared_bytes) {}

  template <class... Args>
  void operator()(Args&&... args) const {
    cudaLaunchAttribute dependent = {};
    dependent.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    dependent.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = grid_;
    config.blockDim = block_;
    config.dynamicSmemBytes = shared_bytes_;
    config.stream = cudaStreamPerThread;
    config.attrs = &dependent;
    config.numAttrs = dependent_launches() ? 1 : 0;
    // A failed launch leaves its error for the caller's CUDA_CHECK_LAUNCH, as <<<...>>> does.
    (void)cudaLaunchKernelEx(&config, kernel_, std::forward<Args>(args)...);
  }

 private:
  void (*kernel_)(Params...);
  dim3 grid_, block_;
  size_t shared_bytes_;
};
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
  await_prior_grids();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    f(i);
}

template <class F>
void for_each(int64_t n, F f) {
  if (n == 0) return;
  PSGD_LAUNCH(for_each_kernel<F>, blocks_for(n), kThreads)(n, f);
  CUDA_CHECK_LAUNCH();
}

}  // namespace psgd::cuda
