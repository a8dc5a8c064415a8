// What the direct convolutions (conv2d_direct.h) share: the vector type, and where each output
// vector and its inputs lie in a zero-padded image.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>

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

// The taps that one plane of a padded image serves: rows x cols of them, tap (i, j) at
// first + i * pitch + j from an output's position, applying filter tap
// (r0 + r_step * i, s0 + s_step * j).
struct TapGrid {
  int64_t first, rows, cols;
  int64_t r0, r_step, s0, s_step;
};

// The zero-padded copy of an image that a forward convolution reads. At stride 1 one plane per
// channel; at stride 2 the padded planes split into phase planes, the rows and columns of even
// and of odd padded index, so that every tap of every output again lies at p * pitch + q plus a
// fixed offset (only the phases some tap reads are kept: one for 1x1 filters).
struct PaddedImage {
  explicit PaddedImage(const Geometry& g)
      : stride(g.stride),
        phases_r(std::min(g.stride, g.r)),
        phases_s(std::min(g.stride, g.s)),
        hp(g.h + 2 * g.pad),
        wp(g.w + 2 * g.pad),
        pitch((wp + stride - 1) / stride),
        phase_floats((hp + stride - 1) / stride * pitch),
        channel_floats(phases_r * phases_s * phase_floats),
        // Along the flat plane the last vector of the last channel reads up to kLanes - 1 floats
        // past it.
        floats(g.c * channel_floats + kLanes) {}

  int64_t stride, phases_r, phases_s;
  int64_t hp, wp;          // the padded input plane
  int64_t pitch;           // a row of a phase plane (the padded row at stride 1)
  int64_t phase_floats;    // a phase plane
  int64_t channel_floats;  // a channel's phase planes
  int64_t floats;          // the image with its slack
};

// The output vectors of a P x Q plane and the taps they read from a padded image with rows of
// `pitch` floats. By rows where Q is a multiple of the lanes, or half of them on an even number
// of output rows (two half rows per vector): every lane an output, in the plane's order.
// Elsewhere along the flat plane, positions o = p * pitch + q, with pitch - Q wrap-around lanes
// per row to drop.
struct Plane {
  Plane() = default;
  Plane(int64_t p, int64_t q, int64_t pitch, int64_t channel_floats,
        std::initializer_list<TapGrid> grid_list)
      : pitch(pitch),
        channel_floats(channel_floats),
        p(p),
        q(q),
        flat_rounded(((p - 1) * pitch + q + kLanes - 1) / kLanes * kLanes),
        rows(q % kLanes == 0 || (2 * q == kLanes && p % 2 == 0)),
        halves(rows && 2 * q == kLanes),
        vectors(rows ? p * q / kLanes : flat_rounded / kLanes) {
    for (const TapGrid& grid : grid_list) add(grid);
  }

  void add(const TapGrid& grid) {
    grids[grid_count++] = grid;
    for (int64_t i = 0; i < grid.rows; ++i)
      for (int64_t j = 0; j < grid.cols; ++j, ++taps)
        if (taps < kMaxTaps) tap_offsets[taps] = grid.first + i * pitch + j;
  }

  int64_t pitch = 0;           // of the padded image's rows
  int64_t channel_floats = 0;  // of the padded image's channels
  int64_t p = 0, q = 0;
  // flat positions up to the last output, (P - 1) * pitch + Q, in vectors
  int64_t flat_rounded = 0;
  bool rows = false, halves = false;
  int64_t vectors = 0;
  TapGrid grids[kMaxStride * kMaxStride] = {};
  int grid_count = 0;
  // Every tap's offset, in the grids' order (the packed filters' order): the tiles walk this one
  // list (3-7% faster per layer than loops over the grids). Larger filters than 7x7 are not
  // worthwhile.
  static constexpr int64_t kMaxTaps = 49;
  int64_t tap_offsets[kMaxTaps] = {};
  int64_t taps = 0;

  std::span<const TapGrid> grids_used() const { return {grids, size_t(grid_count)}; }

  // Where an output row starts in the outputs the vectors write.
  int64_t row_stride() const { return rows ? q : pitch; }

  // Whether the flat layout wastes little enough: the wrap-around lanes and the last vector's
  // tail must not take most of the arithmetic (small planes are left to the GEMM path).
  bool flat_efficient() const { return p * q * 10 >= flat_rounded * 7; }
  bool worthwhile() const { return taps <= kMaxTaps && (rows || flat_efficient()); }

  // Where vector j's inputs for tap offset 0 start.
  int64_t input_offset(int64_t j) const {
    if (!rows) return j * kLanes;
    const int64_t first = j * kLanes;  // its first output, p * Q + q
    return first / q * pitch + first % q;
  }
};

// The forward convolution's output plane over its padded image: a grid of taps per phase plane.
inline Plane forward_plane(const Geometry& g, const PaddedImage& image) {
  Plane plane(g.out_h(), g.out_w(), image.pitch, image.channel_floats, {});
  for (int64_t a = 0; a < image.phases_r; ++a)
    for (int64_t b = 0; b < image.phases_s; ++b)
      plane.add({(a * image.phases_s + b) * image.phase_floats, (g.r - a + g.stride - 1) / g.stride,
                 (g.s - b + g.stride - 1) / g.stride, a, g.stride, b, g.stride});
  return plane;
}

// Planes (channels, h, w) into a buffer of channels `channel_floats` apart and rows `pitch`
// apart, from `to`.
inline void copy_planes(const float* from, int64_t channels, int64_t h, int64_t w,
                        int64_t channel_floats, int64_t pitch, float* to) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t y = 0; y < h; ++y)
      copy_row(from + (c * h + y) * w, w, to + c * channel_floats + y * pitch);
}

// A row's even columns to `even` and its odd ones to `odd`; a null pointer drops them.
inline void split_row(const float* __restrict from, int64_t count, float* __restrict even,
                      float* __restrict odd) {
  const int64_t pairs = count / 2;
  if (even && odd) {
    // Both at once: GCC vectorises the pair loop with permutes (ResNet-32's first stride-2
    // forward: 1.3 ms, against 1.8 with a loop per phase at a run-time stride).
#pragma omp simd
    for (int64_t i = 0; i < pairs; ++i) {
      even[i] = from[2 * i];
      odd[i] = from[2 * i + 1];
    }
  } else if (even || odd) {
    float* to = even ? even : odd;
    const float* first = from + (even ? 0 : 1);
    for (int64_t i = 0; i < pairs; ++i) to[i] = first[2 * i];
  }
  if (count % 2 && even) even[pairs] = from[count - 1];
}

// The image into the interior of its padded copy (its phase planes at stride 2); the border
// stays zero from the first image.
inline void copy_interior(const float* x, const Geometry& g, const PaddedImage& l, float* image) {
  if (l.stride == 1) {
    copy_planes(x, g.c, g.h, g.w, l.channel_floats, l.pitch, image + g.pad * l.pitch + g.pad);
    return;
  }
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t h = 0; h < g.h; ++h) {
      // Padded row and column h + pad, w + pad: phase (h + pad) % 2, at (h + pad) / 2.
      const int64_t a = (h + g.pad) % 2;
      if (a >= l.phases_r) continue;
      float* row = image + c * l.channel_floats + a * l.phases_s * l.phase_floats +
                   (h + g.pad) / 2 * l.pitch;
      const auto phase_column = [&](int64_t w) -> float* {
        const int64_t b = (w + g.pad) % 2;
        return b < l.phases_s ? row + b * l.phase_floats + (w + g.pad) / 2 : nullptr;
      };
      split_row(x + (c * g.h + h) * g.w, g.w, phase_column(0), phase_column(1));
    }
}

}  // namespace psgd::cpu::direct
