#include "kernels/cpu/conv2d_direct.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace psgd::cpu::direct {
namespace {

// Register tiles: kBlockK output channels by kTileVectors vectors of flat positions.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kBlockK = 8;  // 24 accumulators, 3 inputs; the taps are broadcast from memory
#else
constexpr int kLanes = 8;
constexpr int kBlockK = 4;  // 12 accumulators, 3 inputs and 1 broadcast tap: AVX2's 16 registers
#endif
constexpr int kTileVectors = 3;

// The filter gradient's tiles: kGradBlockK output channels by the nine taps of one input channel.
#if defined(__AVX512F__)
constexpr int kGradBlockK = 3;  // 27 accumulators, 3 dy vectors and the shifted input
#else
constexpr int kGradBlockK = 1;  // 9 accumulators
#endif
constexpr int kTaps = 9;
constexpr int64_t kChunkFloats = 256 * 1024;  // a chunk of padded images and flat dy: ~1 MB, in L2

using Vec = float __attribute__((vector_size(kLanes * sizeof(float))));
using HalfVec = float __attribute__((vector_size(kLanes / 2 * sizeof(float))));

Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }

// A vector from half a vector at `first` and half a vector one row (`stride`) below it.
Vec load_halves(const float* first, int64_t stride) {
  HalfVec a, b;
  std::memcpy(&a, first, sizeof a);
  std::memcpy(&b, first + stride, sizeof b);
#if defined(__AVX512F__)
  return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
  return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7);
#endif
}

// Rows are 8 to 34 floats: an inline loop, as a memcpy call per row costs more than the copy.
void copy_row(const float* from, int64_t count, float* to) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) to[i] = from[i];
}

struct Layout {
  explicit Layout(const Geometry& g)
      : hp(g.h + 2 * g.pad),
        wp(g.w + 2 * g.pad),
        p(g.out_h()),
        q(g.out_w()),
        flat((p - 1) * wp + q),
        flat_rounded((flat + kLanes - 1) / kLanes * kLanes),
        rows(q % kLanes == 0 || (2 * q == kLanes && p % 2 == 0)),
        halves(rows && 2 * q == kLanes),
        vectors(rows ? p * q / kLanes : flat_rounded / kLanes),
        blocks((g.k + kBlockK - 1) / kBlockK),
        block_filter_floats(kBlockK * g.c * g.r * g.s),
        // The last vector of the last plane reads up to kLanes - 1 floats past it.
        image_floats(g.c * hp * wp + kLanes),
        thread_floats(image_floats + (rows ? 0 : kBlockK * flat_rounded)) {}

  int64_t hp, wp;  // the padded plane
  int64_t p, q;    // the output plane
  int64_t flat;    // flat positions up to the last output: (P - 1) * Wp + Q
  int64_t flat_rounded;
  // Output vectors lie along the output rows, without waste, where Q is a multiple of the lanes
  // (or half of them: two half rows per vector), and are written straight into y; elsewhere
  // they lie along the flat padded plane and are cropped into y.
  bool rows, halves;
  int64_t vectors;  // per output plane
  int64_t blocks;  // of kBlockK output channels
  int64_t block_filter_floats;
  int64_t image_floats;
  int64_t thread_floats;  // a padded image, and one block's flat outputs where not by rows
};

// Whether the flat layout wastes little enough: the wrap-around columns and the last vector's
// tail must not take most of the arithmetic (small planes are left to the GEMM path).
bool flat_efficient(const Layout& l) { return l.p * l.q * 10 >= l.flat_rounded * 7; }

// Where vector j's inputs for tap (0, 0) start in the padded plane.
int64_t input_offset(const Layout& l, int64_t j) {
  if (!l.rows) return j * kLanes;
  const int64_t first = j * kLanes;  // its first output, p * Q + q
  return first / l.q * l.wp + first % l.q;
}

// The filter gradient's buffers per thread: a chunk of padded images, each followed (along the
// flat plane only) by its dy in flat positions, zero in the wrap-around columns and the tail;
// then the thread's dw. By rows, dy is read where it lies.
struct GradientLayout {
  explicit GradientLayout(const Geometry& g)
      : l(g),
        per_image_floats(l.image_floats + (l.rows ? 0 : g.k * l.flat_rounded)),
        // dy read in place counts against the cache too
        chunk(std::clamp<int64_t>(kChunkFloats / (l.image_floats + g.k * l.vectors * kLanes), 1,
                                  g.n)),
        partial_floats(g.k * g.c * kTaps),
        thread_floats(chunk * per_image_floats + partial_floats) {}

  Layout l;
  int64_t per_image_floats, chunk, partial_floats, thread_floats;
};

// The vectors of a plane in order, each with its inputs' offset for tap (0, 0), as input_offset
// gives it but without a division per vector.
struct VectorWalk {
  explicit VectorWalk(const Layout& l) : l(l) {}

  void next() {
    if (l.halves) {
      offset += 2 * l.wp;
    } else if (!l.rows) {
      offset += kLanes;
    } else if (q0 += kLanes; q0 < l.q) {
      offset += kLanes;
    } else {
      q0 = 0;
      offset += l.wp - l.q + kLanes;
    }
  }

  const Layout& l;
  int64_t offset = 0, q0 = 0;
};

// Filters in the order the tiles read them, [block][c][r][s][kBlockK], zero past channel K.
void pack_filters(const float* w, Filters filters, const Geometry& g, const Layout& l,
                  float* packed) {
  std::fill(packed, packed + l.blocks * l.block_filter_floats, 0.0f);
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

// The image into the interior of its padded copy; the border stays zero from the first image.
void copy_interior(const float* x, const Geometry& g, const Layout& l, float* image) {
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t h = 0; h < g.h; ++h)
      copy_row(x + (c * g.h + h) * g.w, g.w, image + (c * l.hp + h + g.pad) * l.wp + g.pad);
}

// dy's planes at the flat positions of their outputs, as the forward tiles wrote them.
void copy_flat(const float* dy, const Geometry& g, const Layout& l, float* flat) {
  for (int64_t k = 0; k < g.k; ++k)
    for (int64_t p = 0; p < l.p; ++p)
      copy_row(dy + (k * l.p + p) * l.q, l.q, flat + k * l.flat_rounded + p * l.wp);
}

// One block's outputs for the Vectors vectors from j0, into out + kk * out_stride + j * kLanes
// (added where accumulate) for the block's first `channels` output channels.
template <int Vectors, bool kHalves>
void tile(const float* image, const float* filters, const Geometry& g, const Layout& l,
          int64_t j0, float* out, int64_t out_stride, int64_t channels, bool accumulate) {
  Vec acc[kBlockK][Vectors] = {};
  int64_t offset[Vectors];
  for (int v = 0; v < Vectors; ++v) offset[v] = input_offset(l, j0 + v);
  const int64_t plane = l.hp * l.wp;
  for (int64_t c = 0; c < g.c; ++c) {
    for (int64_t r = 0; r < g.r; ++r) {
      const float* row = image + c * plane + r * l.wp;
      for (int64_t s = 0; s < g.s; ++s, filters += kBlockK) {
        Vec in[Vectors];
#pragma GCC unroll 4
        for (int v = 0; v < Vectors; ++v)
          in[v] = kHalves ? load_halves(row + offset[v] + s, l.wp) : load(row + offset[v] + s);
#pragma GCC unroll 16
        for (int kk = 0; kk < kBlockK; ++kk)
#pragma GCC unroll 4
          for (int v = 0; v < Vectors; ++v) acc[kk][v] += in[v] * filters[kk];
      }
    }
  }
  for (int kk = 0; kk < kBlockK && kk < channels; ++kk)
    for (int v = 0; v < Vectors; ++v) {
      float* to = out + kk * out_stride + (j0 + v) * kLanes;
      store(to, accumulate ? load(to) + acc[kk][v] : acc[kk][v]);
    }
}

// All vectors of one block: whole tiles, then the rest as 2 + 2 rather than 3 + 1 (a tile of one
// vector loads eight taps for eight FMAs), or as 2 or 1.
template <bool kHalves>
void block_outputs(const float* image, const float* filters, const Geometry& g, const Layout& l,
                   float* out, int64_t out_stride, int64_t channels, bool accumulate) {
  static_assert(kTileVectors == 3, "the tail below handles one, two or four vectors");
  const int64_t tiles = l.vectors % 3 == 1 && l.vectors > 1 ? l.vectors / 3 - 1 : l.vectors / 3;
  int64_t j0 = 0;
  for (; j0 < tiles * kTileVectors; j0 += kTileVectors)
    tile<kTileVectors, kHalves>(image, filters, g, l, j0, out, out_stride, channels, accumulate);
  for (; j0 + 2 <= l.vectors; j0 += 2)
    tile<2, kHalves>(image, filters, g, l, j0, out, out_stride, channels, accumulate);
  if (j0 < l.vectors)
    tile<1, kHalves>(image, filters, g, l, j0, out, out_stride, channels, accumulate);
}

// The block's flat outputs without the wrap-around columns, into one image of y.
void write_block(const float* out, int64_t k0, const Geometry& g, const Layout& l, float* y,
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

float lane_sum(Vec v) {
  float sum = 0.0f;
  for (int i = 0; i < kLanes; ++i) sum += v[i];
  return sum;
}

// Adds to dw[k0 .. k0 + KB][c] the products of the chunk's `count` images: images padded, dy
// vector j of channel k of image i at dys + i * dy_image + k * dy_plane + j * kLanes.
template <int KB, bool kHalves>
void gradient_block(const float* images, const float* dys, int64_t dy_image, int64_t dy_plane,
                    int64_t count, int64_t k0, int64_t c, const Geometry& g,
                    const GradientLayout& gl, float* dw) {
  const Layout& l = gl.l;
  Vec acc[KB][kTaps] = {};
  for (int64_t i = 0; i < count; ++i) {
    const float* x = images + i * gl.per_image_floats + c * l.hp * l.wp;
    const float* d = dys + i * dy_image + k0 * dy_plane;
    VectorWalk walk(l);
    for (int64_t j = 0; j < l.vectors; ++j, walk.next()) {
      Vec dv[KB];
#pragma GCC unroll 4
      for (int kk = 0; kk < KB; ++kk) dv[kk] = load(d + kk * dy_plane + j * kLanes);
#pragma GCC unroll 9
      for (int t = 0; t < kTaps; ++t) {
        const float* at = x + walk.offset + t / 3 * l.wp + t % 3;
        const Vec in = kHalves ? load_halves(at, l.wp) : load(at);
#pragma GCC unroll 4
        for (int kk = 0; kk < KB; ++kk) acc[kk][t] += dv[kk] * in;
      }
    }
  }
  for (int kk = 0; kk < KB; ++kk)
    for (int t = 0; t < kTaps; ++t) dw[((k0 + kk) * g.c + c) * kTaps + t] += lane_sum(acc[kk][t]);
}

// One chunk's products for all (k, c) pairs: blocks of kGradBlockK output channels, then the
// one or two left.
template <bool kHalves>
void chunk_gradient(const float* images, const float* dys, int64_t dy_image, int64_t dy_plane,
                    int64_t count, const Geometry& g, const GradientLayout& gl, float* dw) {
  static_assert(kGradBlockK <= 3, "the tail below handles one or two channels");
  int64_t k0 = 0;
  for (; k0 + kGradBlockK <= g.k; k0 += kGradBlockK)
    for (int64_t c = 0; c < g.c; ++c)
      gradient_block<kGradBlockK, kHalves>(images, dys, dy_image, dy_plane, count, k0, c, g, gl,
                                           dw);
  for (int64_t c = 0; c < g.c; ++c) {
    if (g.k - k0 == 2)
      gradient_block<2, kHalves>(images, dys, dy_image, dy_plane, count, k0, c, g, gl, dw);
    if (g.k - k0 == 1)
      gradient_block<1, kHalves>(images, dys, dy_image, dy_plane, count, k0, c, g, gl, dw);
  }
}

}  // namespace

bool worthwhile(const Geometry& g) {
  const Layout l(g);
  return l.rows || flat_efficient(l);
}

int64_t workspace_floats(int threads, const Geometry& g) {
  const Layout l(g);
  return l.blocks * l.block_filter_floats + threads * l.thread_floats;
}

void convolve(int threads, const float* x, const float* w, Filters filters, const Geometry& g,
              float* y, bool accumulate, float* ws) {
  const Layout l(g);
  float* packed = ws;
  pack_filters(w, filters, g, l, packed);
  const int64_t in_floats = g.c * g.h * g.w, out_floats = g.k * l.p * l.q;
#pragma omp parallel num_threads(threads)
  {
    float* image = ws + l.blocks * l.block_filter_floats + omp_get_thread_num() * l.thread_floats;
    float* out = image + l.image_floats;
    std::fill(image, image + l.image_floats, 0.0f);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      copy_interior(x + n * in_floats, g, l, image);
      float* y_image = y + n * out_floats;
      for (int64_t b = 0; b < l.blocks; ++b) {
        const float* block_filters = packed + b * l.block_filter_floats;
        const int64_t k0 = b * kBlockK, channels = std::min<int64_t>(kBlockK, g.k - k0);
        float* y_block = y_image + k0 * l.p * l.q;
        if (l.halves) {
          block_outputs<true>(image, block_filters, g, l, y_block, l.p * l.q, channels, accumulate);
        } else if (l.rows) {
          block_outputs<false>(image, block_filters, g, l, y_block, l.p * l.q, channels,
                               accumulate);
        } else {
          block_outputs<false>(image, block_filters, g, l, out, l.flat_rounded, kBlockK, false);
          write_block(out, k0, g, l, y_image, accumulate);
        }
      }
    }
  }
}

bool computes_filter_gradient(const Geometry& g) { return g.r == 3 && g.s == 3 && worthwhile(g); }

int64_t filter_gradient_workspace_floats(int threads, const Geometry& g) {
  return threads * GradientLayout(g).thread_floats;
}

void filter_gradient(int threads, const float* x, const float* dy, const Geometry& g, float* dw,
                     float* ws) {
  const GradientLayout gl(g);
  const Layout& l = gl.l;
  const int64_t chunks = (g.n + gl.chunk - 1) / gl.chunk;
  const int64_t in_floats = g.c * g.h * g.w, out_floats = g.k * l.p * l.q;
  // Zero once: borders, wrap-around columns and every thread's partial dw.
  std::fill(ws, ws + threads * gl.thread_floats, 0.0f);
  const auto partial = [&](int t) { return ws + t * gl.thread_floats + gl.chunk * gl.per_image_floats; };
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    float* images = ws + t * gl.thread_floats;
    float* flats = images + l.image_floats;  // along the flat plane: image i, then its dy
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t n0 = chunk * gl.chunk, count = std::min(gl.chunk, g.n - n0);
      for (int64_t i = 0; i < count; ++i) {
        copy_interior(x + (n0 + i) * in_floats, g, l, images + i * gl.per_image_floats);
        if (!l.rows) copy_flat(dy + (n0 + i) * out_floats, g, l, flats + i * gl.per_image_floats);
      }
      const float* dy_chunk = dy + n0 * out_floats;
      if (l.halves)
        chunk_gradient<true>(images, dy_chunk, out_floats, l.p * l.q, count, g, gl, partial(t));
      else if (l.rows)
        chunk_gradient<false>(images, dy_chunk, out_floats, l.p * l.q, count, g, gl, partial(t));
      else
        chunk_gradient<false>(images, flats, gl.per_image_floats, l.flat_rounded, count, g, gl,
                              partial(t));
    }
  }
  // Summed in thread order: the same threads give the same bits.
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < gl.partial_floats; ++i) {
    float sum = 0.0f;
    for (int t = 0; t < threads; ++t) sum += partial(t)[i];
    dw[i] = sum;
  }
}

}  // namespace psgd::cpu::direct
