// The direct convolution: forward, and the data gradient as the forward over dy.
#include <omp.h>

#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/conv2d_direct_plane.h"

namespace psgd::cpu::direct {
namespace {

// Register tiles: kBlockK output channels by kTileVectors vectors.
#if defined(__AVX512F__)
constexpr int kBlockK = 8;  // 24 accumulators, 3 inputs; the taps are broadcast from memory
#else
constexpr int kBlockK = 4;  // 12 accumulators, 3 inputs and 1 broadcast tap: 16 registers
#endif
constexpr int kTileVectors = 3;

// The packed taps and per-thread buffers of one convolution.
struct Layout {
  explicit Layout(const Geometry& g)
      : plane(g),
        blocks((g.k + kBlockK - 1) / kBlockK),
        block_taps(kBlockK * g.c * g.r * g.s),
        // a padded image, and one block's outputs to crop where the vectors run along the flat
        // plane
        thread_floats(plane.image_floats + (plane.rows ? 0 : kBlockK * plane.flat_rounded)) {}

  Plane plane;
  int64_t blocks;      // of kBlockK output channels
  int64_t block_taps;  // floats of one block's packed taps
  int64_t thread_floats;
};

// The filters in the order the tiles read them, [block][c][r][s][kBlockK], zero past channel K.
void pack_taps(const float* w, Filters filters, const Geometry& g, const Layout& l,
               float* packed) {
  std::fill(packed, packed + l.blocks * l.block_taps, 0.0f);
  for (int64_t k = 0; k < g.k; ++k)
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t r = 0; r < g.r; ++r)
        for (int64_t s = 0; s < g.s; ++s) {
          const float tap =
              filters == Filters::AsGiven
                  ? w[((k * g.c + c) * g.r + r) * g.s + s]
                  : w[((c * g.k + k) * g.r + (g.r - 1 - r)) * g.s + (g.s - 1 - s)];
          packed[(((k / kBlockK * g.c + c) * g.r + r) * g.s + s) * kBlockK + k % kBlockK] = tap;
        }
}

// One block's outputs for the kVectors vectors from j0, into out + kk * out_stride + j * kLanes
// (added where accumulate) for the block's first `channels` output channels.
template <int kVectors, bool kHalves>
void tile(const float* image, const float* taps, const Geometry& g, const Plane& l, int64_t j0,
          float* out, int64_t out_stride, int64_t channels, bool accumulate) {
  Vec acc[kBlockK][kVectors] = {};
  int64_t offset[kVectors];
  for (int v = 0; v < kVectors; ++v) offset[v] = l.input_offset(j0 + v);
  const int64_t plane = l.hp * l.wp;
  for (int64_t c = 0; c < g.c; ++c) {
    for (int64_t r = 0; r < g.r; ++r) {
      const float* row = image + c * plane + r * l.wp;
      for (int64_t s = 0; s < g.s; ++s, taps += kBlockK) {
        Vec in[kVectors];
#pragma GCC unroll 4
        for (int v = 0; v < kVectors; ++v)
          in[v] = kHalves ? load_halves(row + offset[v] + s, l.wp) : load(row + offset[v] + s);
#pragma GCC unroll 16
        for (int kk = 0; kk < kBlockK; ++kk)
#pragma GCC unroll 4
          for (int v = 0; v < kVectors; ++v) acc[kk][v] += in[v] * taps[kk];
      }
    }
  }
  for (int kk = 0; kk < kBlockK && kk < channels; ++kk)
    for (int v = 0; v < kVectors; ++v) {
      float* to = out + kk * out_stride + (j0 + v) * kLanes;
      store(to, accumulate ? load(to) + acc[kk][v] : acc[kk][v]);
    }
}

// All vectors of one block: whole tiles, then the rest as 2 + 2 rather than 3 + 1 (a tile of one
// vector loads as many taps as it does FMAs), or as 2 or 1.
template <bool kHalves>
void block_outputs(const float* image, const float* taps, const Geometry& g, const Plane& l,
                   float* out, int64_t out_stride, int64_t channels, bool accumulate) {
  static_assert(kTileVectors == 3, "the tail below handles one, two or four vectors");
  const int64_t tiles =
      l.vectors % kTileVectors == 1 && l.vectors > 1 ? l.vectors / kTileVectors - 1
                                                     : l.vectors / kTileVectors;
  int64_t j0 = 0;
  for (; j0 < tiles * kTileVectors; j0 += kTileVectors)
    tile<kTileVectors, kHalves>(image, taps, g, l, j0, out, out_stride, channels, accumulate);
  for (; j0 + 2 <= l.vectors; j0 += 2)
    tile<2, kHalves>(image, taps, g, l, j0, out, out_stride, channels, accumulate);
  if (j0 < l.vectors) tile<1, kHalves>(image, taps, g, l, j0, out, out_stride, channels, accumulate);
}

// A block computed along the flat plane, without its wrap-around lanes, into one image of y.
void crop_block(const float* out, int64_t k0, const Geometry& g, const Plane& l, float* y,
                bool accumulate) {
  for (int64_t kk = 0; kk < std::min<int64_t>(kBlockK, g.k - k0); ++kk)
    for (int64_t p = 0; p < l.p; ++p) {
      const float* from = out + kk * l.flat_rounded + p * l.wp;
      float* to = y + ((k0 + kk) * l.p + p) * l.q;
      if (accumulate) {
#pragma omp simd
        for (int64_t q = 0; q < l.q; ++q) to[q] += from[q];
      } else {
        copy_row(from, l.q, to);
      }
    }
}

// All output channels of one image.
void image_outputs(const float* image, const float* packed, const Geometry& g, const Layout& l,
                   float* out, float* y_image, bool accumulate) {
  const Plane& plane = l.plane;
  for (int64_t b = 0; b < l.blocks; ++b) {
    const float* taps = packed + b * l.block_taps;
    const int64_t k0 = b * kBlockK, channels = std::min<int64_t>(kBlockK, g.k - k0);
    float* y_block = y_image + k0 * plane.p * plane.q;
    const int64_t y_stride = plane.p * plane.q;
    if (plane.halves) {
      block_outputs<true>(image, taps, g, plane, y_block, y_stride, channels, accumulate);
    } else if (plane.rows) {
      block_outputs<false>(image, taps, g, plane, y_block, y_stride, channels, accumulate);
    } else {
      block_outputs<false>(image, taps, g, plane, out, plane.flat_rounded, kBlockK, false);
      crop_block(out, k0, g, plane, y_image, accumulate);
    }
  }
}

}  // namespace

bool worthwhile(const Geometry& g) {
  const Plane l(g);
  return l.rows || l.flat_efficient();
}

int64_t workspace_floats(int threads, const Geometry& g) {
  const Layout l(g);
  return l.blocks * l.block_taps + threads * l.thread_floats;
}

void convolve(int threads, const float* x, const float* w, Filters filters, const Geometry& g,
              float* y, bool accumulate, float* ws) {
  const Layout l(g);
  float* packed = ws;
  pack_taps(w, filters, g, l, packed);
  const int64_t in_floats = g.c * g.h * g.w, out_floats = g.k * l.plane.p * l.plane.q;
#pragma omp parallel num_threads(threads)
  {
    float* image = ws + l.blocks * l.block_taps + omp_get_thread_num() * l.thread_floats;
    std::fill(image, image + l.plane.image_floats, 0.0f);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      copy_interior(x + n * in_floats, g, l.plane, image);
      image_outputs(image, packed, g, l, image + l.plane.image_floats, y + n * out_floats,
                    accumulate);
    }
  }
}

}  // namespace psgd::cpu::direct
