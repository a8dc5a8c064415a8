// The direct convolution: forward, and the data gradient, at stride 1 as the forward over dy, at
// stride 2 by the phases of dx.
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

int64_t blocks_of(int64_t channels) { return (channels + kBlockK - 1) / kBlockK; }

// The filters in the order the tiles read them, [block][input][grid][i][j][kBlockK] from
// `packed` with blocks `block_floats` apart, for `outputs` channels (the rest of the last block
// stays as it is: zero). tap(output, input, r, s) reads one filter tap.
template <class Tap>
void pack_taps(const Plane& plane, int64_t outputs, int64_t inputs, int64_t block_floats, Tap tap,
               float* packed) {
  for (int64_t o = 0; o < outputs; ++o) {
    float* to = packed + o / kBlockK * block_floats + o % kBlockK;
    for (int64_t in = 0; in < inputs; ++in)
      for (const TapGrid& grid : plane.grids_used())
        for (int64_t i = 0; i < grid.rows; ++i)
          for (int64_t j = 0; j < grid.cols; ++j, to += kBlockK)
            *to = tap(o, in, grid.r0 + grid.r_step * i, grid.s0 + grid.s_step * j);
  }
}

// One block's outputs for the kVectors vectors from j0, summed over `inputs` channels of the
// padded image, into out + kk * out_stride + j * kLanes (added where accumulate) for the
// block's first `channels` output channels.
template <int kVectors, bool kHalves>
void tile(const float* image, const float* taps, int64_t inputs, const Plane& l, int64_t j0,
          float* out, int64_t out_stride, int64_t channels, bool accumulate) {
  Vec acc[kBlockK][kVectors] = {};
  int64_t offset[kVectors];
  for (int v = 0; v < kVectors; ++v) offset[v] = l.input_offset(j0 + v);
  for (int64_t c = 0; c < inputs; ++c) {
    const float* channel = image + c * l.channel_floats;
    for (int64_t t = 0; t < l.taps; ++t, taps += kBlockK) {
      const float* at = channel + l.tap_offsets[t];
      Vec in[kVectors];
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v)
        in[v] = kHalves ? load_halves(at + offset[v], l.pitch) : load(at + offset[v]);
#pragma GCC unroll 16
      for (int kk = 0; kk < kBlockK; ++kk)
#pragma GCC unroll 4
        for (int v = 0; v < kVectors; ++v) acc[kk][v] += in[v] * taps[kk];
    }
  }
  // Unrolled, so that the accumulators stay registers (a loop indexing them kept them in memory,
  // zeroed by a memset call per tile).
#pragma GCC unroll 16
  for (int kk = 0; kk < kBlockK; ++kk) {
    if (kk == channels) break;
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) {
      float* to = out + kk * out_stride + (j0 + v) * kLanes;
      store(to, accumulate ? load(to) + acc[kk][v] : acc[kk][v]);
    }
  }
}

// All vectors of one block: whole tiles, then the rest as 2 + 2 rather than 3 + 1 (a tile of one
// vector loads as many taps as it does FMAs), or as 2 or 1.
template <bool kHalves>
void block_vectors(const float* image, const float* taps, int64_t inputs, const Plane& l,
                   float* out, int64_t out_stride, int64_t channels, bool accumulate) {
  static_assert(kTileVectors == 3, "the tail below handles one, two or four vectors");
  const int64_t tiles =
      l.vectors % kTileVectors == 1 && l.vectors > 1 ? l.vectors / kTileVectors - 1
                                                     : l.vectors / kTileVectors;
  int64_t j0 = 0;
  for (; j0 < tiles * kTileVectors; j0 += kTileVectors)
    tile<kTileVectors, kHalves>(image, taps, inputs, l, j0, out, out_stride, channels, accumulate);
  for (; j0 + 2 <= l.vectors; j0 += 2)
    tile<2, kHalves>(image, taps, inputs, l, j0, out, out_stride, channels, accumulate);
  if (j0 < l.vectors)
    tile<1, kHalves>(image, taps, inputs, l, j0, out, out_stride, channels, accumulate);
}

// One block's outputs in the plane's own layout (rows of row_stride() floats), kBlockK planes
// `out_stride` apart.
void block_outputs(const float* image, const float* taps, int64_t inputs, const Plane& l,
                   float* out, int64_t out_stride, int64_t channels, bool accumulate) {
  if (l.halves)
    block_vectors<true>(image, taps, inputs, l, out, out_stride, channels, accumulate);
  else
    block_vectors<false>(image, taps, inputs, l, out, out_stride, channels, accumulate);
}

// Floats of one output plane in the plane's own layout.
int64_t plane_floats(const Plane& l) { return l.rows ? l.p * l.q : l.flat_rounded; }

// ---- Forward --------------------------------------------------------------------------------

// How the weight tensor holds the filters.
enum class Filters {
  AsGiven,           // w is (K, C, R, S): the forward convolution
  TransposedFlipped  // w is (C, K, R, S), each filter turned by 180 degrees: the data gradient
};

// The packed taps and per-thread buffers of one convolution.
struct Layout {
  explicit Layout(const Geometry& g)
      : padded(g),
        plane(forward_plane(g, padded)),
        blocks(blocks_of(g.k)),
        block_taps(kBlockK * g.c * plane.taps),
        // a padded image, and one block's outputs to crop where the vectors run along the flat
        // plane
        thread_floats(padded.floats + (plane.rows ? 0 : kBlockK * plane.flat_rounded)) {}

  PaddedImage padded;
  Plane plane;
  int64_t blocks;      // of kBlockK output channels
  int64_t block_taps;  // floats of one block's packed taps
  int64_t thread_floats;
};

// A block computed along the flat plane, without its wrap-around lanes, into one image of y.
void crop_block(const float* out, int64_t k0, const Geometry& g, const Plane& l, float* y,
                bool accumulate) {
  for (int64_t kk = 0; kk < std::min<int64_t>(kBlockK, g.k - k0); ++kk)
    for (int64_t p = 0; p < l.p; ++p) {
      const float* from = out + kk * l.flat_rounded + p * l.pitch;
      float* to = y + ((k0 + kk) * l.p + p) * l.q;
      if (accumulate) {
#pragma omp simd
        for (int64_t q = 0; q < l.q; ++q) to[q] += from[q];
      } else {
        copy_row(from, l.q, to);
      }
    }
}

// All output channels of one image: by rows straight into y, along the flat plane through
// `out`.
void image_outputs(const float* image, const float* packed, const Geometry& g, const Layout& l,
                   float* out, float* y_image, bool accumulate) {
  const Plane& plane = l.plane;
  for (int64_t b = 0; b < l.blocks; ++b) {
    const float* taps = packed + b * l.block_taps;
    const int64_t k0 = b * kBlockK, channels = std::min<int64_t>(kBlockK, g.k - k0);
    if (plane.rows) {
      block_outputs(image, taps, g.c, plane, y_image + k0 * plane.p * plane.q, plane.p * plane.q,
                    channels, accumulate);
    } else {
      block_outputs(image, taps, g.c, plane, out, plane.flat_rounded, kBlockK, false);
      crop_block(out, k0, g, plane, y_image, accumulate);
    }
  }
}

int64_t convolve_workspace_floats(int threads, const Geometry& g) {
  const Layout l(g);
  return l.blocks * l.block_taps + threads * l.thread_floats;
}

// y (N, K, P, Q) = conv(x, filters), or += when accumulate.
void convolve(int threads, const float* x, const float* w, Filters filters, const Geometry& g,
              float* y, bool accumulate, float* ws) {
  const Layout l(g);
  float* packed = ws;
  std::fill(packed, packed + l.blocks * l.block_taps, 0.0f);
  pack_taps(l.plane, g.k, g.c, l.block_taps,
            [&](int64_t k, int64_t c, int64_t r, int64_t s) {
              return filters == Filters::AsGiven
                         ? w[((k * g.c + c) * g.r + r) * g.s + s]
                         : w[((c * g.k + k) * g.r + (g.r - 1 - r)) * g.s + (g.s - 1 - s)];
            },
            packed);
  const int64_t in_floats = g.c * g.h * g.w, out_floats = g.k * l.plane.p * l.plane.q;
#pragma omp parallel num_threads(threads)
  {
    float* image = ws + l.blocks * l.block_taps + omp_get_thread_num() * l.thread_floats;
    std::fill(image, image + l.padded.floats, 0.0f);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      copy_interior(x + n * in_floats, g, l.padded, image);
      image_outputs(image, packed, g, l, image + l.padded.floats, y + n * out_floats, accumulate);
    }
  }
}

// ---- Data gradient --------------------------------------------------------------------------

// At stride 1: the forward convolution of dy, padded by R - 1 - pad, with the filters
// transposed and turned (square filters, pad < R).
Geometry stride_1_data_geometry(const Geometry& g) {
  return {g.n, g.k, g.out_h(), g.out_w(), g.c, g.r, g.s, g.r - 1 - g.pad};
}

// At stride 2 dx splits into four phases, its rows and columns of even and of odd padded index
// (h + pad, w + pad). Phase (a, b) holds dx rows h0, h0 + 2, ... and columns w0, w0 + 2, ...; its
// row i gathers dy rows i + e - m through filter rows a + 2m (e fixed per phase), so each phase
// is a stride-1 convolution of dy with its own grid of taps, computed into a buffer and
// interleaved into dx.
// dy is copied once, padded so that every phase's taps lie inside.
struct Phase {
  int64_t first;  // dx row (column) of the phase's output row (column) 0
  int64_t count;  // its rows (columns)
  int64_t taps;   // filter rows (columns) a, a + 2, ... below R (S)
  int64_t shift;  // the dy row (column) its first tap reads for output row (column) 0
};

// The phase of padded parity `parity` along one axis of `extent` dx rows, filters of `size` >= 2.
Phase phase_along(int64_t parity, int64_t extent, int64_t size, int64_t pad) {
  const int64_t first = (parity + pad) % 2;  // (h + pad) % 2 == parity
  const int64_t taps = (size - parity + 1) / 2;
  // Output row i reads dy row i + (first + pad - parity) / 2 - m for tap m; the grid runs m
  // downwards, from m = taps - 1.
  return {first, first < extent ? (extent - first + 1) / 2 : 0, taps,
          (first + pad - parity) / 2 - (taps - 1)};
}

struct StridedLayout {
  explicit StridedLayout(const Geometry& g) {
    int64_t bottom = g.out_h(), right = g.out_w();  // dy rows (columns) read, past the last
    const auto cover = [](const Phase& along, int64_t& before, int64_t& after) {
      before = std::max(before, -along.shift);
      after = std::max(after, along.shift + along.count + along.taps - 1);
    };
    for (int64_t parity = 0; parity < 2; ++parity) {
      rows[parity] = phase_along(parity, g.h, g.r, g.pad);
      columns[parity] = phase_along(parity, g.w, g.s, g.pad);
      cover(rows[parity], top, bottom);
      cover(columns[parity], left, right);
    }
    pitch = left + right;
    channel_floats = (top + bottom) * pitch;
    padded_floats = g.k * channel_floats + kLanes;
    int64_t taps = 0, outputs = 0;
    for (int64_t a = 0; a < 2; ++a)
      for (int64_t b = 0; b < 2; ++b) {
        const Phase &row = rows[a], &column = columns[b];
        const Plane& plane = planes[a * 2 + b] =
            Plane(row.count, column.count, pitch, channel_floats,
                  {{(row.shift + top) * pitch + column.shift + left, row.taps, column.taps,
                    a + 2 * (row.taps - 1), -2, b + 2 * (column.taps - 1), -2}});
        tap_offset[a * 2 + b] = taps;
        output_offset[a * 2 + b] = outputs;
        taps += kBlockK * g.k * plane.taps;
        outputs += kBlockK * plane_floats(plane);
      }
    blocks = blocks_of(g.c);
    block_taps = taps;
    thread_floats = padded_floats + outputs;
  }

  Phase rows[2], columns[2];
  int64_t top = 0, left = 0;  // dy's padding before its first row and column
  int64_t pitch, channel_floats, padded_floats;
  Plane planes[4];  // phase (a, b) at a * 2 + b
  int64_t tap_offset[4], output_offset[4];  // within a block's taps, a thread's outputs
  int64_t blocks, block_taps, thread_floats;
};

// A dx row from the phases of its even and odd columns (row even[i] to column 2i, odd[i] to
// 2i + 1), added where accumulate.
void merge_row(const float* even, const float* odd, int64_t count, float* to, bool accumulate) {
  const int64_t pairs = count / 2;
  if (accumulate) {
#pragma omp simd
    for (int64_t i = 0; i < pairs; ++i) {
      to[2 * i] += even[i];
      to[2 * i + 1] += odd[i];
    }
    if (count % 2) to[count - 1] += even[pairs];
  } else {
#pragma omp simd
    for (int64_t i = 0; i < pairs; ++i) {
      to[2 * i] = even[i];
      to[2 * i + 1] = odd[i];
    }
    if (count % 2) to[count - 1] = even[pairs];
  }
}

// The block's kBlockK channels of dx from `outputs`, the phases' planes.
void interleave_block(const float* outputs, int64_t c0, const Geometry& g, const StridedLayout& l,
                      float* dx_image, bool accumulate) {
  // dx column 0 has padded parity pad % 2.
  const int64_t even = g.pad % 2, odd = 1 - even;
  for (int64_t kk = 0; kk < std::min<int64_t>(kBlockK, g.c - c0); ++kk)
    for (int64_t h = 0; h < g.h; ++h) {
      const int64_t a = (h + g.pad) % 2, i = (h - l.rows[a].first) / 2;
      const auto phase_row = [&](int64_t b) {
        const Plane& plane = l.planes[a * 2 + b];
        return outputs + l.output_offset[a * 2 + b] + kk * plane_floats(plane) +
               i * plane.row_stride();
      };
      merge_row(phase_row(even), phase_row(odd), g.w, dx_image + ((c0 + kk) * g.h + h) * g.w,
                accumulate);
    }
}

int64_t strided_workspace_floats(int threads, const Geometry& g) {
  const StridedLayout l(g);
  return l.blocks * l.block_taps + threads * l.thread_floats;
}

void strided_data_gradient(int threads, const float* dy, const float* w, const Geometry& g,
                           float* dx, bool accumulate, float* ws) {
  const StridedLayout l(g);
  float* packed = ws;
  std::fill(packed, packed + l.blocks * l.block_taps, 0.0f);
  for (int phase = 0; phase < 4; ++phase)
    pack_taps(l.planes[phase], g.c, g.k, l.block_taps,
              [&](int64_t c, int64_t k, int64_t r, int64_t s) {
                return w[((k * g.c + c) * g.r + r) * g.s + s];
              },
              packed + l.tap_offset[phase]);
  const int64_t dy_floats = g.k * g.out_h() * g.out_w(), dx_floats = g.c * g.h * g.w;
#pragma omp parallel num_threads(threads)
  {
    float* image = ws + l.blocks * l.block_taps + omp_get_thread_num() * l.thread_floats;
    float* outputs = image + l.padded_floats;
    std::fill(image, image + l.padded_floats, 0.0f);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      copy_planes(dy + n * dy_floats, g.k, g.out_h(), g.out_w(), l.channel_floats, l.pitch,
                  image + l.top * l.pitch + l.left);
      for (int64_t b = 0; b < l.blocks; ++b) {
        for (int phase = 0; phase < 4; ++phase) {
          const Plane& plane = l.planes[phase];
          block_outputs(image, packed + b * l.block_taps + l.tap_offset[phase], g.k, plane,
                        outputs + l.output_offset[phase], plane_floats(plane), kBlockK, false);
        }
        interleave_block(outputs, b * kBlockK, g, l, dx + n * dx_floats, accumulate);
      }
    }
  }
}

}  // namespace

bool worthwhile(const Geometry& g) { return forward_plane(g, PaddedImage(g)).worthwhile(); }

int64_t workspace_floats(int threads, const Geometry& g) {
  return convolve_workspace_floats(threads, g);
}

void convolve(int threads, const float* x, const float* w, const Geometry& g, float* y, float* ws) {
  convolve(threads, x, w, Filters::AsGiven, g, y, false, ws);
}

bool computes_data_gradient(const Geometry& g) {
  if (g.stride == 1) {
    const Geometry data = stride_1_data_geometry(g);
    return g.r == g.s && data.pad >= 0 && worthwhile(data);
  }
  // Every phase has rows, columns and taps (with 1x1 filters, the GEMM's scatter is faster
  // than computing three phases of zeros), and planes worth computing.
  if (g.stride != 2 || g.h < 2 || g.w < 2 || g.r < 2 || g.s < 2) return false;
  const StridedLayout l(g);
  for (const Plane& plane : l.planes)
    if (!plane.worthwhile()) return false;
  return true;
}

int64_t data_gradient_workspace_floats(int threads, const Geometry& g) {
  return g.stride == 1 ? convolve_workspace_floats(threads, stride_1_data_geometry(g))
                       : strided_workspace_floats(threads, g);
}

void data_gradient(int threads, const float* dy, const float* w, const Geometry& g, float* dx,
                   bool accumulate, float* ws) {
  if (g.stride == 1)
    convolve(threads, dy, w, Filters::TransposedFlipped, stride_1_data_geometry(g), dx, accumulate,
             ws);
  else
    strided_data_gradient(threads, dy, w, g, dx, accumulate, ws);
}

}  // namespace psgd::cpu::direct
