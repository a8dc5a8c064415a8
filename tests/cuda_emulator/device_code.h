// Included first (-include) by every CUDA source of an emulated build (PSGD_CUDA=EMULATE): what
// nvcc gives device code, for the host compiler. Each CUDA thread of a launch runs as a fiber on
// the host, a block's threads together, so that barriers and warp shuffles wait for the threads
// they name; see grid.h. __shared__ variables become function statics: blocks run one after
// another, so a block has them to itself, but they start zeroed (once) and keep their values
// from block to block instead of starting undefined.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#include "tests/cuda_emulator/device_memory.h"

#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)

namespace psgd::emu {

// Where the running CUDA thread is in its grid.
struct ThreadCoords {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  unsigned lane;  // within the warp (threads numbered x fastest, then y, z)
};

// The thread whose code runs now; set by the grid runner for each fiber it resumes.
inline thread_local const ThreadCoords* current_thread = nullptr;

// __syncthreads: waits until every thread of the block is here (all must arrive: a thread that
// has returned while others wait is reported as a divergent barrier).
void sync_block();
// Exchanges one value among the lanes of `mask` that have not returned (each must call it):
// gives lane `source`'s bytes, or all-ones bits where that lane has returned or is not in mask.
void warp_exchange(unsigned mask, const void* mine, void* theirs, unsigned source, size_t bytes);
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 of the calling warp (all 32 lanes must
// call it): d += a b with each lane's fragments as PTX lays them out, operands read as TF32
// (their low 13 mantissa bits ignored, as tensor cores do), products summed in float32.
void warp_mma_m16n8k8_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]);
// cvt.rna.tf32.f32: to TF32 precision, rounding to nearest with ties away from zero.
float round_to_tf32(float v);
// The launch's dynamic shared memory (its third launch argument), filled with 0xff bytes at the
// start of each block.
void* dynamic_shared_memory();
// griddepcontrol.wait (then .launch_dependents). Kernels run one after another here, so there is
// nothing to wait for; a programmatic dependent launch checks instead that every thread calls it
// and touches no device memory before (see LaunchConfig::dependent).
void await_prior_grids();

struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes = 0;
  // Launched as a programmatic dependent (psgd::cuda::dependent_launches): on a GPU its threads
  // may start before the kernels before it end, so each must call await_prior_grids() before it
  // touches device memory. The emulator fails the launch where a thread returns without calling
  // it, and holds device memory back from the first block until all its threads have called it
  // (waiting there for each other, so that a barrier or shuffle before it fails too): an access
  // before it faults. (__device__ variables, host statics here, are not held back.)
  bool dependent = false;
};
// Runs `thread_body` once per thread of the grid, or records it when the calling thread is
// capturing a graph; a bad configuration becomes the error cudaGetLastError reports.
void launch(const char* kernel, const LaunchConfig& config, std::function<void()> thread_body);

// PSGD_LAUNCH(kernel, grid, block[, shared bytes])(args...): the arguments are copied at the
// launch, as CUDA copies them.
class Launch {
 public:
  Launch(const char* kernel, bool dependent, dim3 grid, dim3 block, size_t shared_bytes = 0)
      : kernel_(kernel), config_{grid, block, shared_bytes, dependent} {}
  template <class Body>
  auto operator()(Body body) const {
    return [kernel = kernel_, config = config_, body](auto... args) {
      int position = 0;
      (check(kernel, position++, args), ...);
      launch(kernel, config, [body, args...] { body(args...); });
    };
  }

 private:
  template <class T>
  static void check(const char* kernel, int position, const T& arg) {
    if constexpr (std::is_pointer_v<T>) check_argument(kernel, position, arg);
  }

  const char* kernel_;
  LaunchConfig config_;
};

template <class T>
T shuffle(unsigned mask, T value, unsigned source) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move 4 or 8 bytes");
  T result;
  warp_exchange(mask, &value, &result, source, sizeof(T));
  return result;
}

}  // namespace psgd::emu

#define threadIdx (::psgd::emu::current_thread->thread_idx)
#define blockIdx (::psgd::emu::current_thread->block_idx)
#define blockDim (::psgd::emu::current_thread->block_dim)
#define gridDim (::psgd::emu::current_thread->grid_dim)
#define warpSize 32

// Device code's min and max of two values of one type.
using std::max;
using std::min;

inline void __syncthreads() {
  psgd::emu::sync_block();
}
// Blocks run one at a time, so every write is already visible to later blocks.
inline void __threadfence() {}

template <class T>
T __ldcg(const T* p) {
  return *p;
}

// A relaxed atomic read-modify-write, as CUDA's: the racecheck build sees an atomic access, which
// races with no other atomic one and orders nothing.
template <class T>
T atomicAdd(T* address, T value) {
  T old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  T updated = old + value;
  while (!__atomic_compare_exchange(address, &old, &updated, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
    updated = old + value;
  return old;
}

template <class T>
T __shfl_sync(unsigned mask, T value, int source, int width = warpSize) {
  const unsigned lane = psgd::emu::current_thread->lane;
  const unsigned segment = lane / width * width;
  return psgd::emu::shuffle(mask, value, segment + static_cast<unsigned>(source) % width);
}

template <class T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = warpSize) {
  const unsigned lane = psgd::emu::current_thread->lane;
  const unsigned w = static_cast<unsigned>(width);
  return psgd::emu::shuffle(mask, value, lane % w + delta < w ? lane + delta : lane);
}

template <class T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = warpSize) {
  // A lane may read earlier groups of `width` lanes; reading a later one returns its own value.
  const unsigned lane = psgd::emu::current_thread->lane;
  const unsigned w = static_cast<unsigned>(width);
  const unsigned source = lane ^ static_cast<unsigned>(lane_mask);
  return psgd::emu::shuffle(mask, value, source / w > lane / w ? lane : source);
}
