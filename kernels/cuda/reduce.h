// Deterministic warp and block reductions: values combine down a fixed tree of shuffles within a
// warp, then the warps' results in warp order, so results do not depend on timing (no atomic
// sums).
#pragma once

#include "engine/bfloat16.h"
#include "kernels/cuda/launch.h"

namespace psgd::cuda {

inline constexpr int kWarp = 32;
inline constexpr unsigned kAllLanes = 0xffffffffu;
inline constexpr int kMaxWarps = 1024 / kWarp;  // of a block

// The warp's values combined by `op` down a fixed tree to lane 0, then given to every lane.
template <class V, class Op>
__device__ V warp_combine(V v, Op op) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v = op(v, __shfl_down_sync(kAllLanes, v, offset));
  return __shfl_sync(kAllLanes, v, 0);
}

template <class V>
__device__ V warp_sum(V v) {
  return warp_combine(v, [](V a, V b) { return a + b; });
}

__device__ inline float warp_min(float v) {
  return warp_combine(v, [](float a, float b) { return fminf(a, b); });
}

__device__ inline float warp_max(float v) {
  return warp_combine(v, [](float a, float b) { return fmaxf(a, b); });
}

// The block's values combined by `op`: each warp's down its tree, then the warps' in warp order;
// every thread gets the result. All threads of the block call it (blockDim.x a multiple of 32).
// Two barriers, where a tree in shared memory takes one per level.
template <class V, class Op>
__device__ V block_combine(V value, Op op) {
  __shared__ V per_warp[kMaxWarps];
  value = warp_combine(value, op);
  if (threadIdx.x % kWarp == 0) per_warp[threadIdx.x / kWarp] = value;
  __syncthreads();
  V total = per_warp[0];
  for (int w = 1; w < static_cast<int>(blockDim.x) / kWarp; ++w) total = op(total, per_warp[w]);
  __syncthreads();  // per_warp may be filled again
  return total;
}

template <class V>
__device__ V block_sum(V value) {
  return block_combine(value, [](V a, V b) { return a + b; });
}

// The sum of value(i) over i in [0, count), by one warp in a fixed order: each lane adds every
// 32nd, then the lanes combine down their tree; every lane gets it.
template <class V, class Value>
__device__ V warp_sum_of(int64_t count, Value value) {
  V sum = 0;
  for (int64_t i = threadIdx.x % kWarp; i < count; i += kWarp) sum += value(i);
  return warp_sum(sum);
}

// Grid-wide reductions in one launch: each block's thread 0 writes its partial, then every thread
// of the block calls this with the reduction's ticket (a device counter, zero between kernels)
// and the number of blocks taking part. It answers, in every thread, whether this block was the
// last to write, in which case all the partials are visible to it (read them past L1, with
// __ldcg) and it has reset the ticket. Once per kernel (its answer is read after its only barrier).
// A device's reductions on one ticket run one at a time: psgd runs all of a device's work on one
// stream.
__device__ inline bool last_to_arrive(unsigned* ticket, unsigned blocks) {
  __shared__ bool last;
  if (threadIdx.x == 0) {
    __threadfence();  // the partial is visible to every block before the ticket is taken
    last = atomicAdd(ticket, 1u) == blocks - 1;
    if (last) *ticket = 0;
  }
  __syncthreads();
  if (last) __threadfence();  // and the other blocks' partials are read after their tickets
  return last;
}

// The min and max of x[0, n) (float or bf16) over the block (NaN ignored, as fminf/fmaxf); every
// thread gets both.
template <class T>
__device__ void block_min_max(const T* x, int64_t n, float& lo, float& hi) {
  float mine_lo = INFINITY, mine_hi = -INFINITY;
  // Unrolled so that each thread has several loads in flight: one block streams a whole range.
#pragma unroll 8
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = load(x, i);
    mine_lo = fminf(mine_lo, v);
    mine_hi = fmaxf(mine_hi, v);
  }
  lo = block_combine(mine_lo, [](float a, float b) { return fminf(a, b); });
  hi = block_combine(mine_hi, [](float a, float b) { return fmaxf(a, b); });
}

}  // namespace psgd::cuda
