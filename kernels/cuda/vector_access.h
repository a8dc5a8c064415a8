// W consecutive activations in one memory access (W = 4: 16 bytes of float32, 8 of bf16; W = 1:
// the scalar access), for passes written once for both widths. A memory-bound pass that reads
// four at a time keeps four times the bytes in flight per thread, which is what it takes to near
// the card's bandwidth (Little's law: bytes in flight = bandwidth x latency), and does its
// per-element bookkeeping (index, channel, coefficients) once per four. The values and their
// arithmetic are the same at either width.
#pragma once

#include <cstdint>

#include "engine/bfloat16.h"

namespace psgd::cuda {

template <int W>
struct Lanes {
  float v[W];
};

// Whether p (null passes) is aligned for W-wide accesses of its type.
template <int W, class T>
bool lanes_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (W * sizeof(T)) == 0;
}

// Elements i .. i + W - 1; i is a multiple of W and p aligned (lanes_aligned).
template <int W, class T>
__device__ inline Lanes<W> load_lanes(const T* p, int64_t i) {
  static_assert(W == 1 || W == 4);
  if constexpr (W == 1) {
    return {{load(p, i)}};
  } else if constexpr (sizeof(T) == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p + i);
    return {{q.x, q.y, q.z, q.w}};
  } else {
    const uint2 q = *reinterpret_cast<const uint2*>(p + i);  // little-endian: element i lowest
    const auto half = [](uint32_t word, int high) {
      return to_float(bf16{static_cast<uint16_t>(high ? word >> 16 : word & 0xffffu)});
    };
    return {{half(q.x, 0), half(q.x, 1), half(q.y, 0), half(q.y, 1)}};
  }
}

template <int W, class T>
__device__ inline void store_lanes(T* p, int64_t i, const Lanes<W>& l) {
  static_assert(W == 1 || W == 4);
  if constexpr (W == 1) {
    store(p, i, l.v[0]);
  } else if constexpr (sizeof(T) == 4) {
    *reinterpret_cast<float4*>(p + i) = make_float4(l.v[0], l.v[1], l.v[2], l.v[3]);
  } else {
    const auto pair = [](float low, float high) {
      return static_cast<uint32_t>(to_bf16(low).bits) |
             (static_cast<uint32_t>(to_bf16(high).bits) << 16);
    };
    *reinterpret_cast<uint2*>(p + i) = make_uint2(pair(l.v[0], l.v[1]), pair(l.v[2], l.v[3]));
  }
}

}  // namespace psgd::cuda
