// What the direct convolutions (conv2d_direct.h) share: the vector type, and where each output
// vector and its inputs lie in a zero-padded image.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <immintrin.h>

#include "kernels/cpu/conv2d_direct.h"

namespace psgd::cpu::direct {

#if defined(__AVX512F__)
inline constexpr int kLanes = 16;
#elif defined(__AVX__)
inline constexpr int kLanes = 8;
#else
inline constexpr int kLanes = 4;
#endif

using Vec = float __attribute__((vector_size(kLanes * sizeof(float))));

inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }

// A vector from half a vector at `first` and half a vector one row (`stride`) below it, joined
// in registers (through memory, the two stores stall the wide load: twice the step time).
inline Vec load_halves(const float* first, int64_t stride) {
#if defined(__AVX512F__)
  return Vec(_mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(first)),
                                _mm256_loadu_ps(first + stride), 1));
#elif defined(__AVX__)
  return Vec(_mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(first)),
                                  _mm_loadu_ps(first + stride), 1));
#else
  return Vec(_mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(first)),
                          reinterpret_cast<const __m64*>(first + stride)));
#endif
}

// Rows are 8 to 34 floats: an inline loop, as a memcpy call per row costs more than the copy.
inline void copy_row(const float* from, int64_t count, float* to) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) to[i] = from[i];
}

// The padded input plane and the output vectors over the output plane. By rows where Q is a
// multiple of the lanes, or half of them on an even number of output rows (two half rows per
// vector): every lane an output, in y's order. Elsewhere along the flat padded plane, positions
// o = p * Wp + q, with S - 1 wrap-around lanes per row to drop.
struct Plane {
  explicit Plane(const Geometry& g)
      : hp(g.h + 2 * g.pad),
        wp(g.w + 2 * g.pad),
        p(g.out_h()),
        q(g.out_w()),
        flat_rounded(((p - 1) * wp + q + kLanes - 1) / kLanes * kLanes),
        rows(q % kLanes == 0 || (2 * q == kLanes && p % 2 == 0)),
        halves(rows && 2 * q == kLanes),
        vectors(rows ? p * q / kLanes : flat_rounded / kLanes),
        // Along the flat plane the last vector of the last channel reads up to kLanes - 1 floats
        // past it.
        image_floats(g.c * hp * wp + kLanes) {}

  int64_t hp, wp;        // the padded input plane
  int64_t p, q;          // the output plane
  int64_t flat_rounded;  // flat positions up to the last output, (P - 1) * Wp + Q, in vectors
  bool rows, halves;
  int64_t vectors;       // per output plane
  int64_t image_floats;  // a padded image with its slack

  // Whether the flat layout wastes little enough: the wrap-around lanes and the last vector's
  // tail must not take most of the arithmetic (small planes are left to the GEMM path).
  bool flat_efficient() const { return p * q * 10 >= flat_rounded * 7; }

  // Where vector j's inputs for tap (0, 0) start in the padded plane.
  int64_t input_offset(int64_t j) const {
    if (!rows) return j * kLanes;
    const int64_t first = j * kLanes;  // its first output, p * Q + q
    return first / q * wp + first % q;
  }
};

// The image into the interior of its padded copy; the border stays zero from the first image.
inline void copy_interior(const float* x, const Geometry& g, const Plane& l, float* image) {
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t h = 0; h < g.h; ++h)
      copy_row(x + (c * g.h + h) * g.w, g.w, image + (c * l.hp + h + g.pad) * l.wp + g.pad);
}

}  // namespace psgd::cpu::direct
