// bfloat16 storage: the upper 16 bits of a float32. The bf16 mode stores activations and their
// gradients this way; arithmetic always happens in float32. Values are widened on load and
// rounded to nearest even on store, with the same bit operations on the CPU and the GPU, so that
// both round identically.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define PSGD_BF16_HD __host__ __device__
#else
#define PSGD_BF16_HD
#endif

namespace psgd {

struct bf16 {
  uint16_t bits;
};

namespace bfloat16_detail {
// The same bits seen as another type of the same size (memcpy works in device code too, and
// compiles to nothing).
template <class To, class From>
PSGD_BF16_HD inline To same_bits(From v) {
  static_assert(sizeof(To) == sizeof(From));
  To t;
  memcpy(&t, &v, sizeof t);
  return t;
}
}  // namespace bfloat16_detail

PSGD_BF16_HD inline float to_float(bf16 v) {
  return bfloat16_detail::same_bits<float>(static_cast<uint32_t>(v.bits) << 16);
}

// Round to nearest, ties to even; a NaN stays a (quiet) NaN, infinities stay infinite.
PSGD_BF16_HD inline bf16 to_bf16(float f) {
  const uint32_t u = bfloat16_detail::same_bits<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((u >> 16) | 0x0040u)};
  return {static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

// Element access for kernels written once for both storage types.
PSGD_BF16_HD inline float load(const float* p, int64_t i) {
  return p[i];
}
PSGD_BF16_HD inline float load(const bf16* p, int64_t i) {
  return to_float(p[i]);
}
PSGD_BF16_HD inline void store(float* p, int64_t i, float v) {
  p[i] = v;
}
PSGD_BF16_HD inline void store(bf16* p, int64_t i, float v) {
  p[i] = to_bf16(v);
}

}  // namespace psgd
