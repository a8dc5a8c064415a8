// F(2x2, 3x3): the filter, input and output transforms and the point-wise products (see
// conv2d_winograd.h). With B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] and A^T = [1 1 1 0; 0 1 -1 -1].
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <type_traits>

#include "kernels/cpu/conv2d_direct_plane.h"
#include "kernels/cpu/conv2d_winograd.h"

namespace psgd::cpu::winograd {
namespace {

using direct::kLanes;
using direct::load;
using direct::store;
using direct::Vec;

constexpr int kPoints = 16;  // of a transformed 4x4 patch
// Register tiles of the products: kBlockK output channels by up to kTileVectors vectors of
// tiles, as the direct method's (conv2d_direct.cpp).
#if defined(__AVX512F__)
constexpr int kBlockK = 8;
#else
constexpr int kBlockK = 4;
#endif
constexpr int kTileVectors = 3;
// A block's transformed inputs and products stay within 3/8 of a core's L2 (2 MiB), and hold at
// most this many tiles (more only lengthens the rows the transforms walk). But a block has at
// least a register tile's three vectors of tiles, even where those spill L2 (VGG's 512
// channels): fewer leave the products loading as many values as they multiply.
constexpr int64_t kBlockFloats = 192 * 1024;
constexpr int64_t kMaxBlockTiles = 256;
constexpr int64_t kMinBlockTiles = kTileVectors * kLanes;
// The filter gradient's products sum over a block's tiles in sgemm: longer sums amortise its
// packing, so its blocks are larger.
constexpr int64_t kSumBlockFloats = 1024 * 1024;
constexpr int64_t kMinSumTiles = 256;
constexpr int64_t kMaxSumTiles = 1024;

constexpr int64_t kFloatsPerLine = 64 / sizeof(float);

constexpr int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
constexpr int64_t round_up(int64_t a, int64_t multiple) {
  return ceil_div(a, multiple) * multiple;
}

// A convolution of `inputs` planes (h, w) into `outputs` planes, as the transforms see it:
// tiles of 2x2 outputs in rows of w / 2, h / 2 tile rows per image, the batch's tile rows in
// blocks of `rows`, each block's tiles `pitch` floats apart per point and channel.
// The data gradient convolves dy's K planes into dx's C; the filter gradient transforms x's C
// planes as the forward does and dy's K planes as its outputs.
struct Layout {
  Layout(const Geometry& g, Direction direction, int threads)
      : inputs(direction == Direction::DataGradient ? g.k : g.c),
        outputs(direction == Direction::DataGradient ? g.c : g.k),
        h(g.h),
        w(g.w),
        output_blocks((outputs + kBlockK - 1) / kBlockK),
        tiles_per_row(w / 2),
        tile_rows(g.n * (h / 2)),
        block_tiles(direction == Direction::FilterGradient
                        ? std::clamp(kSumBlockFloats / (kPoints * (inputs + outputs)), kMinSumTiles,
                                     kMaxSumTiles)
                        : std::clamp(kBlockFloats / (kPoints * (inputs + padded_outputs())),
                                     kMinBlockTiles, kMaxBlockTiles)) {
    // Whole vectors of tiles where the rows allow it.
    const int64_t unit = kLanes / std::gcd<int64_t>(kLanes, tiles_per_row);
    rows = std::max(unit, block_tiles / tiles_per_row / unit * unit);
    // But a block for every thread, and as many for each where the rows allow: the wanted
    // blocks rounded up to a multiple of the threads. The filter gradient's large blocks kept
    // ResNet's third stage at batch 128 on 4 threads (VGG16-bn's 4x4 planes on 2), and ResNet-32
    // at batch 32 or VGG16-bn at 64 there on one. Never fewer tiles than a register tile takes.
    const int64_t blocks = round_up(std::max<int64_t>(1, ceil_div(tile_rows, rows)), threads);
    const int64_t least_rows = round_up(ceil_div(kMinBlockTiles, tiles_per_row), unit);
    rows = std::max(round_up(ceil_div(tile_rows, blocks), unit), std::min(rows, least_rows));
    pitch = round_up(rows * tiles_per_row, kLanes);
  }

  int64_t inputs, outputs, h, w;
  int64_t output_blocks;
  int64_t tiles_per_row, tile_rows;
  int64_t block_tiles;  // wanted
  int64_t rows = 0, pitch = 0;

  int64_t padded_outputs() const { return output_blocks * kBlockK; }
  // Floats between points in V and M: one vector more than the channels' rows, so that the
  // points' rows do not lie a multiple of 4 KiB apart (the transforms walk all 16 at once).
  int64_t v_point() const { return inputs * pitch + kLanes; }
  int64_t m_point() const { return padded_outputs() * pitch + kLanes; }
  int64_t blocks() const { return (tile_rows + rows - 1) / rows; }
  int64_t filter_floats() const { return kPoints * padded_outputs() * inputs; }
  // V [point][input][pitch], M (or the filter gradient's D) [point][output][pitch], a zero
  // row, and four rows of column transforms per tile row.
  int64_t thread_floats() const {
    return kPoints * (v_point() + m_point()) + w + 4 * rows * (w + 2);
  }
  // The filter gradient's per-thread sums, [point][output][input].
  int64_t sums_floats() const { return kPoints * outputs * inputs; }
  int64_t workspace_floats(int threads, Direction direction) const {
    return direction == Direction::FilterGradient ? threads * (thread_floats() + sums_floats())
                                                  : filter_floats() + threads * thread_floats();
  }

  // Where tile row `row` of the batch lies: its image and its row of tiles in the image.
  int64_t image_of(int64_t row) const { return row / (h / 2); }
  int64_t tile_row_in_image(int64_t row) const { return row % (h / 2); }
};

// Rows of tiles whose input transform runs in registers (transform_tile_row): those of
// with_tiles_per_row's compile-time lengths that are whole vectors of 4 tiles.
constexpr bool transforms_in_registers(int64_t tiles_per_row) {
  return tiles_per_row == 4 || tiles_per_row == 8 || tiles_per_row == 16;
}

// The transforms cost per pixel and channel, the products per pixel and channel pair: with fewer
// channels the direct method's 2.25x more multiplications at ~90% of the machine's sgemm rate cost
// less. ResNet-32 at batch 128, forward (AVX-512): 16 channels 2.3 ms against 1.7, 32 channels
// 1.56 against 1.70, 64 channels 1.12 against 1.9. Without AVX-512 the input transform in
// registers pays from 16 channels (a Zen 3, 16 channels, 32x32, warm): forward 4.0-4.7 ms against
// 6.1-6.2, data gradient 4.6-4.7 against 6.1 (AVX2); 8.9-10.0 and 9.4-9.6 against 17.8-22.7
// and 13.9-18.3 (an SSE4.2 build); on 28x28 planes (rows of 14 tiles, the two-pass transform) it
// still lost at AVX2 (data gradient 5.6 against 5.0). Filter gradient (its sums in sgemm),
// AVX-512: 3.3 against 2.3, 2.8 against 2.0, 2.1 against 2.4; AVX2, where the direct filter
// gradient keeps fewer accumulators: 16 channels 7.8-8.1 ms against 5.0-5.5, 32 channels 4.4-5.0
// against 6.6-6.9. SSE builds take AVX2's thresholds for it.
constexpr int64_t kMinChannels = 32;
#if defined(__AVX512F__)
constexpr int64_t kMinChannelsInRegisters = 32, kFilterGradientMinChannels = 64;
#else
constexpr int64_t kMinChannelsInRegisters = 16, kFilterGradientMinChannels = 32;
#endif

bool worthwhile(const Geometry& g, Direction direction) {
  const int64_t least = direction == Direction::FilterGradient ? kFilterGradientMinChannels
                        : transforms_in_registers(g.w / 2)     ? kMinChannelsInRegisters
                                                               : kMinChannels;
  return std::min(g.c, g.k) >= least;
}

// Planes of 2x2 are one tile whose patch is three quarters padding, and VGG16-bn's (512
// channels) ran 8-30% slower than on the im2col GEMM: planes of at least 4x4 (2x2 ones take
// the dense map of conv2d_small_plane.h).
bool applies(const Geometry& g) {
  return g.r == 3 && g.s == 3 && g.stride == 1 && g.pad == 1 && g.h >= 4 && g.w >= 4 &&
         g.h % 2 == 0 && g.w % 2 == 0;
}

// G applied to three rows of a register block's lanes, into four rows `step` rows apart.
inline void transform_filter_taps(const float* g0, const float* g1, const float* g2, float* to,
                                  int step) {
  const int64_t row = step * kBlockK;
#pragma omp simd
  for (int kk = 0; kk < kBlockK; ++kk) {
    to[kk] = g0[kk];
    to[row + kk] = 0.5f * (g0[kk] + g1[kk] + g2[kk]);
    to[2 * row + kk] = 0.5f * (g0[kk] - g1[kk] + g2[kk]);
    to[3 * row + kk] = g2[kk];
  }
}

// The filters' transforms G g G^T into u [point][output block][input][kBlockK], zero past the
// last output; tap(output, input, r, s) reads a filter tap. Output blocks split over the team,
// and each block's filters transform side by side, a lane each (one at a time took 7 ms for
// VGG16-bn's 512 x 512 filters, a quarter of the forward).
template <class Tap>
void transform_filters(const Layout& l, Tap tap, float* u) {
#pragma omp for schedule(static)
  for (int64_t block = 0; block < l.output_blocks; ++block) {
    const int64_t first = block * kBlockK, count = std::min<int64_t>(kBlockK, l.outputs - first);
    for (int64_t input = 0; input < l.inputs; ++input) {
      float taps[9][kBlockK] = {}, columns[4 * 3][kBlockK], points[kPoints][kBlockK];
      for (int64_t kk = 0; kk < count; ++kk)
        for (int t = 0; t < 9; ++t) taps[t][kk] = tap(first + kk, input, t / 3, t % 3);
      for (int s = 0; s < 3; ++s)  // G g: 4 rows of 3
        transform_filter_taps(taps[s], taps[3 + s], taps[6 + s], columns[s], 3);
      for (int i = 0; i < 4; ++i)
        transform_filter_taps(columns[3 * i], columns[3 * i + 1], columns[3 * i + 2], points[4 * i],
                              1);
      for (int p = 0; p < kPoints; ++p)
        std::copy(points[p], points[p] + kBlockK,
                  u + ((p * l.output_blocks + block) * l.inputs + input) * kBlockK);
    }
  }
}

// body(std::integral_constant<int64_t, n>()) with n the tiles per row where ResNet's and VGG's
// planes give them (2 to 16), else n = 0, the transforms then reading the length at run time:
// GCC vectorises their loops fully only at a compile-time length (at a run-time length it left
// most of a row of 8 tiles to scalar code: ResNet-32's third-stage forward 1.58 -> 1.14 ms).
template <class Body>
void with_tiles_per_row(int64_t tiles, Body body) {
  switch (tiles) {
    case 2:
      return body(std::integral_constant<int64_t, 2>());
    case 4:
      return body(std::integral_constant<int64_t, 4>());
    case 8:
      return body(std::integral_constant<int64_t, 8>());
    case 16:
      return body(std::integral_constant<int64_t, 16>());
    default:
      return body(std::integral_constant<int64_t, 0>());
  }
}

// B^T down column q of the patch rows d, into u[0], u[step], u[2 step], u[3 step].
inline void transform_column(const float* const (&d)[4], int64_t q, float* u, int64_t step) {
  u[0] = d[0][q] - d[2][q];
  u[step] = d[1][q] + d[2][q];
  u[2 * step] = d[2][q] - d[1][q];
  u[3 * step] = d[1][q] - d[3][q];
}

// The register path's vectors: kN consecutive tiles of a row, at most the machine's lanes, so
// that each is one register, and at most 8 (the shuffles below come in 4 and 8 lanes; AVX-512
// runs AVX2's).
template <int64_t kTilesPerRow>
constexpr int64_t kRowLanes = std::min<int64_t>({kTilesPerRow, kLanes, 8});

using RowVec4 = float __attribute__((vector_size(4 * sizeof(float))));
using RowVec8 = float __attribute__((vector_size(8 * sizeof(float))));
template <int64_t kN>
using RowVec = std::conditional_t<kN == 8, RowVec8, RowVec4>;

// Lanes 0, 2, 4, ... (kOdd: 1, 3, 5, ...) of the 2 kN floats at `from`.
template <int64_t kN, bool kOdd>
inline RowVec<kN> every_other(const float* from) {
  RowVec<kN> lo, hi;
  std::memcpy(&lo, from, sizeof lo);
  std::memcpy(&hi, from + kN, sizeof hi);
  if constexpr (kN == 8)
    return kOdd ? __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15)
                : __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
  else
    return kOdd ? __builtin_shufflevector(lo, hi, 1, 3, 5, 7)
                : __builtin_shufflevector(lo, hi, 0, 2, 4, 6);
}

// kN lanes from lane kFirst of a's lanes followed by b's.
template <int kFirst, class V>
inline V lanes_from(V a, V b) {
  if constexpr (sizeof(V) == 8 * sizeof(float))
    return __builtin_shufflevector(a, b, kFirst, kFirst + 1, kFirst + 2, kFirst + 3, kFirst + 4,
                                   kFirst + 5, kFirst + 6, kFirst + 7);
  else
    return __builtin_shufflevector(a, b, kFirst, kFirst + 1, kFirst + 2, kFirst + 3);
}

template <class V>
inline void store_row(float* to, V v) {
  std::memcpy(to, &v, sizeof v);
}

// B^T d B of one channel's row of kTilesPerRow tiles (a multiple of 4; d its 4 patch rows) into
// to[point * step + tile], in registers. Tile t reads input columns 2t - 1 .. 2t + 2: B^T down
// the even columns 2t and the odd ones 2t + 1 gives vectors of the middle two, and the outer
// two are the odd one's vector a lane up and the even one's a lane down, zero past the plane.
// The additions of transform_column and then of the row pass in transform_inputs, so the same
// bits, in whole vectors with no lane assembled in scalar code.
template <int64_t kTilesPerRow>
[[gnu::always_inline]] inline void transform_tile_row(const float* const (&d)[4], float* to,
                                                      int64_t step) {
  constexpr int64_t kN = kRowLanes<kTilesPerRow>, kChunks = kTilesPerRow / kN;
  static_assert((kN == 4 || kN == 8) && kTilesPerRow % kN == 0, "whole vectors of 4 or 8 tiles");
  using V = RowVec<kN>;
  V even[kChunks][4], odd[kChunks][4];  // B^T down the even and the odd columns, by its row
  for (int64_t m = 0; m < kChunks; ++m) {
    V e[4], o[4];
    for (int i = 0; i < 4; ++i) {
      e[i] = every_other<kN, false>(d[i] + 2 * kN * m);
      o[i] = every_other<kN, true>(d[i] + 2 * kN * m);
    }
    const auto down_columns = [](const V(&from)[4], V(&into)[4]) {
      into[0] = from[0] - from[2];
      into[1] = from[1] + from[2];
      into[2] = from[2] - from[1];
      into[3] = from[1] - from[3];
    };
    down_columns(e, even[m]);
    down_columns(o, odd[m]);
  }
  for (int64_t m = 0; m < kChunks; ++m)
    for (int i = 0; i < 4; ++i) {
      const V zero = {};
      const V b = even[m][i], c = odd[m][i];
      const V a = lanes_from<kN - 1>(m > 0 ? odd[m - 1][i] : zero, c);
      const V e = lanes_from<1>(b, m + 1 < kChunks ? even[m + 1][i] : zero);
      float* point = to + 4 * i * step + kN * m;
      store_row(point, a - c);
      store_row(point + step, b + c);
      store_row(point + 2 * step, c - b);
      store_row(point + 3 * step, b - e);
    }
}

// B^T d B for the tiles of tile rows [row0, row0 + rows) and every input channel into
// v [point][input][pitch], zero from the last tile to the end of its vector (the products read
// whole vectors, and stale workspace there could be slow denormals). Rows of a multiple of 4
// tiles (ResNet's and VGG's planes from 8x8) transform in registers (transform_tile_row: with
// the prefetch below, ResNet-32's stage-2 and stage-3 forward and data gradient 10-28% faster on
// a Zen 3). Other rows, per channel: B^T down the columns of every tile row first, into
// `columns` (rows x 4 rows of padded columns, the even ones then the odd ones), then B along
// them: reading a row just written would stall on the stores still in flight, and the even and
// odd columns apart make every read of B's pass contiguous (read interleaved, GCC vectorised it
// in part, in scalar code for its rest).
template <int64_t kTilesPerRow>
void transform_inputs(const Layout& l, const float* x, int64_t row0, int64_t rows, float* v,
                      float* scratch) {
  constexpr bool kInRegisters = transforms_in_registers(kTilesPerRow);
  const int64_t tw = kTilesPerRow ? kTilesPerRow : l.tiles_per_row, width = 2 * tw;
  const int64_t step = l.v_point();  // between points (i, j)
  const int64_t padded = width + 2;  // columns -1 .. w
  float* zeros = scratch;
  float* columns = scratch + width;
  std::fill(zeros, zeros + width, 0.0f);
  if constexpr (!kInRegisters) {
    // Padded columns 0 and w + 1: the first even one and the last odd one.
    for (int64_t r = 0; r < 4 * rows; ++r)
      columns[r * padded] = columns[r * padded + width + 1] = 0.0f;
  }
  for (int64_t c = 0; c < l.inputs; ++c) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t image = l.image_of(row0 + r), ty = l.tile_row_in_image(row0 + r);
      const float* plane = x + (image * l.inputs + c) * l.h * width;
      const float* d[4];  // the patch rows 2 ty - 1 .. 2 ty + 2
      for (int i = 0; i < 4; ++i) {
        const int64_t ih = 2 * ty - 1 + i;
        d[i] = ih >= 0 && ih < l.h ? plane + ih * width : zeros;
      }
      // The next channel's rows, which a step brings from memory (with cold caches ~10% of
      // ResNet-32's stage-2 forward on a Zen 3; both paths).
      for (int i = 0; i < 4 && c + 1 < l.inputs; ++i)
        if (d[i] != zeros)
          for (int64_t f = 0; f < width; f += kFloatsPerLine)
            __builtin_prefetch(d[i] + l.h * width + f);
      if constexpr (kInRegisters) {
        transform_tile_row<kTilesPerRow>(d, v + c * l.pitch + r * tw, step);
      } else {
        // The even padded columns, then the odd ones: column 2 k is padded column 2 k + 1,
        // odds[k]; column 2 k + 1 is padded column 2 k + 2, evens[k + 1].
        float* evens = columns + 4 * r * padded;
        float* odds = evens + tw + 1;
#pragma omp simd
        for (int64_t k = 0; k < tw; ++k) {
          transform_column(d, 2 * k, odds + k, padded);
          transform_column(d, 2 * k + 1, evens + k + 1, padded);
        }
      }
    }
    if constexpr (!kInRegisters) {
      // Tile tx reads padded columns 2 tx .. 2 tx + 3: evens[tx], odds[tx], evens[tx + 1],
      // odds[tx + 1].
      for (int64_t r = 0; r < rows; ++r)
        for (int i = 0; i < 4; ++i) {
          const float* evens = columns + (4 * r + i) * padded;
          const float* odds = evens + tw + 1;
          float* to = v + 4 * i * step + c * l.pitch + r * tw;
#pragma omp simd
          for (int64_t tx = 0; tx < tw; ++tx) {
            to[tx] = evens[tx] - evens[tx + 1];
            to[step + tx] = odds[tx] + evens[tx + 1];
            to[2 * step + tx] = evens[tx + 1] - odds[tx];
            to[3 * step + tx] = odds[tx] - odds[tx + 1];
          }
        }
    }
  }
  const int64_t tiles = rows * tw, vector_end = (tiles + kLanes - 1) / kLanes * kLanes;
  for (int p = 0; p < kPoints; ++p)
    for (int64_t c = 0; c < l.inputs; ++c) {
      float* row = v + p * l.v_point() + c * l.pitch;
      std::fill(row + tiles, row + vector_end, 0.0f);
    }
}

// One output block's products for vectors [j0, j0 + kVectors) of tiles: m [kBlockK][pitch] =
// u [input][kBlockK]^T . v [input][pitch].
template <int kVectors>
void multiply_tile(const float* u, const float* v, int64_t inputs, int64_t pitch, int64_t j0,
                   float* m) {
  Vec acc[kBlockK][kVectors] = {};
  for (int64_t c = 0; c < inputs; ++c, u += kBlockK) {
    Vec in[kVectors];
#pragma GCC unroll 4
    for (int j = 0; j < kVectors; ++j) {
      in[j] = load(v + c * pitch + (j0 + j) * kLanes);
      // Opaque, so that the vector is loaded once into a register: GCC otherwise reloaded two of
      // the three in every FMA, and on AVX2 the loads then bound the loop (stage 3's forward
      // 5.4-5.5 -> 3.7-3.8 ms on a Zen 3).
      asm("" : "+v"(in[j]));
    }
#pragma GCC unroll 16
    for (int kk = 0; kk < kBlockK; ++kk)
#pragma GCC unroll 4
      for (int j = 0; j < kVectors; ++j) acc[kk][j] += in[j] * u[kk];
  }
#pragma GCC unroll 16
  for (int kk = 0; kk < kBlockK; ++kk)
#pragma GCC unroll 4
    for (int j = 0; j < kVectors; ++j) store(m + kk * pitch + (j0 + j) * kLanes, acc[kk][j]);
}

// m [point][output][pitch] = u [point] . v [point] over `vectors` vectors of tiles.
void multiply(const Layout& l, const float* u, const float* v, int64_t vectors, float* m) {
  for (int p = 0; p < kPoints; ++p)
    for (int64_t block = 0; block < l.output_blocks; ++block) {
      const float* u_block = u + (p * l.output_blocks + block) * l.inputs * kBlockK;
      const float* v_point = v + p * l.v_point();
      float* m_block = m + p * l.m_point() + block * kBlockK * l.pitch;
      // Threes, but four as 2 + 2: a tile of one vector loads as many values as it does FMAs.
      int64_t j0 = 0;
      for (; vectors - j0 >= kTileVectors && vectors - j0 != 4; j0 += kTileVectors)
        multiply_tile<kTileVectors>(u_block, v_point, l.inputs, l.pitch, j0, m_block);
      for (; vectors - j0 >= 2; j0 += 2)
        multiply_tile<2>(u_block, v_point, l.inputs, l.pitch, j0, m_block);
      if (j0 < vectors) multiply_tile<1>(u_block, v_point, l.inputs, l.pitch, j0, m_block);
    }
}

// A^T m A for the tiles of tile rows [row0, row0 + rows) into y (N, outputs, h, w), added to
// what is there when kAccumulate.
template <int64_t kTilesPerRow, bool kAccumulate>
void transform_outputs(const Layout& l, const float* m, int64_t row0, int64_t rows, float* y) {
  const int64_t tw = kTilesPerRow ? kTilesPerRow : l.tiles_per_row, width = 2 * tw;
  const int64_t step = l.m_point();  // between points
  for (int64_t o = 0; o < l.outputs; ++o)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t image = l.image_of(row0 + r), ty = l.tile_row_in_image(row0 + r);
      float* y0 = y + ((image * l.outputs + o) * l.h + 2 * ty) * width;
      float* y1 = y0 + width;
      const float* mo = m + o * l.pitch + r * tw;
#pragma omp simd
      for (int64_t tx = 0; tx < tw; ++tx) {
        float top[4], bottom[4];  // A^T down the columns
        for (int j = 0; j < 4; ++j) {
          const float m0 = mo[j * step + tx], m1 = mo[(4 + j) * step + tx],
                      m2 = mo[(8 + j) * step + tx], m3 = mo[(12 + j) * step + tx];
          top[j] = m0 + m1 + m2;
          bottom[j] = m1 - m2 - m3;
        }
        const float y00 = top[0] + top[1] + top[2], y01 = top[1] - top[2] - top[3];
        const float y10 = bottom[0] + bottom[1] + bottom[2],
                    y11 = bottom[1] - bottom[2] - bottom[3];
        y0[2 * tx] = kAccumulate ? y0[2 * tx] + y00 : y00;
        y0[2 * tx + 1] = kAccumulate ? y0[2 * tx + 1] + y01 : y01;
        y1[2 * tx] = kAccumulate ? y1[2 * tx] + y10 : y10;
        y1[2 * tx + 1] = kAccumulate ? y1[2 * tx + 1] + y11 : y11;
      }
    }
}

// A dy A^T for the 2x2 tiles of tile rows [row0, row0 + rows) of dy's `outputs` planes into
// d [point][output][pitch], with A = [1 0; 1 1; 1 -1; 0 -1] (A^T's adjoint).
template <int64_t kTilesPerRow>
void transform_output_gradients(const Layout& l, const float* dy, int64_t row0, int64_t rows,
                                float* d) {
  const int64_t tw = kTilesPerRow ? kTilesPerRow : l.tiles_per_row, width = 2 * tw;
  const int64_t step = l.m_point();  // between points
  for (int64_t o = 0; o < l.outputs; ++o)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t image = l.image_of(row0 + r), ty = l.tile_row_in_image(row0 + r);
      const float* top = dy + ((image * l.outputs + o) * l.h + 2 * ty) * width;
      const float* bottom = top + width;
      float* to = d + o * l.pitch + r * tw;
#pragma omp simd
      for (int64_t tx = 0; tx < tw; ++tx) {
        // A down the tile's left and right columns, then along the rows.
        const float a = top[2 * tx], b = top[2 * tx + 1], c = bottom[2 * tx],
                    e = bottom[2 * tx + 1];
        const float left[4] = {a, a + c, a - c, -c}, right[4] = {b, b + e, b - e, -e};
        for (int i = 0; i < 4; ++i) {
          to[4 * i * step + tx] = left[i];
          to[(4 * i + 1) * step + tx] = left[i] + right[i];
          to[(4 * i + 2) * step + tx] = left[i] - right[i];
          to[(4 * i + 3) * step + tx] = -right[i];
        }
      }
    }
}

// sums [point] (outputs, inputs) += d [point] (outputs, tiles) . v [point]^T (tiles, inputs).
void multiply_summed(const Layout& l, const float* d, const float* v, int64_t tiles, float* sums) {
  for (int p = 0; p < kPoints; ++p)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l.outputs, l.inputs, tiles, 1.0f,
                d + p * l.m_point(), l.pitch, v + p * l.v_point(), l.pitch, 1.0f,
                sums + p * l.outputs * l.inputs, l.inputs);
}

// G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1] applied to four rows of a register block's
// lanes, into three rows `step` rows apart.
inline void transform_gradient_points(const float* m0, const float* m1, const float* m2,
                                      const float* m3, float* to, int step) {
  const int64_t row = step * kBlockK;
#pragma omp simd
  for (int kk = 0; kk < kBlockK; ++kk) {
    to[kk] = m0[kk] + 0.5f * (m1[kk] + m2[kk]);
    to[row + kk] = 0.5f * (m1[kk] - m2[kk]);
    to[2 * row + kk] = 0.5f * (m1[kk] + m2[kk]) + m3[kk];
  }
}

// dw (outputs, inputs, 3, 3) = G^T S G per filter, S the threads' sums (sums(t)) added in thread
// order; kBlockK filters side by side, a lane each.
template <class Sums>
void transform_filter_gradients(int threads, const Layout& l, Sums sums, float* dw) {
  const int64_t filters = l.outputs * l.inputs;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t first = 0; first < filters; first += kBlockK) {
    const int64_t count = std::min<int64_t>(kBlockK, filters - first);
    float points[kPoints][kBlockK] = {}, rows[3 * 4][kBlockK], taps[9][kBlockK];
    for (int p = 0; p < kPoints; ++p)
      for (int t = 0; t < threads; ++t)
        for (int64_t kk = 0; kk < count; ++kk) points[p][kk] += sums(t)[p * filters + first + kk];
    for (int j = 0; j < 4; ++j)  // G^T S: 3 rows of 4
      transform_gradient_points(points[j], points[4 + j], points[8 + j], points[12 + j], rows[j],
                                4);
    for (int r = 0; r < 3; ++r)
      transform_gradient_points(rows[4 * r], rows[4 * r + 1], rows[4 * r + 2], rows[4 * r + 3],
                                taps[3 * r], 1);
    for (int64_t kk = 0; kk < count; ++kk)
      for (int t = 0; t < 9; ++t) dw[(first + kk) * 9 + t] = taps[t][kk];
  }
}

// Within a team: the batch's blocks of tile rows split over it, each thread's V, M (or D) and
// scratch `per_thread` floats apart from `buffers`; body(v, m, scratch, row0, rows) per block.
template <class Body>
void for_each_block(const Layout& l, float* buffers, int64_t per_thread, Body body) {
  float* v = buffers + omp_get_thread_num() * per_thread;
  float* m = v + kPoints * l.v_point();
  float* scratch = m + kPoints * l.m_point();
#pragma omp for schedule(static)
  for (int64_t b = 0; b < l.blocks(); ++b) {
    const int64_t row0 = b * l.rows;
    body(v, m, scratch, row0, std::min(l.rows, l.tile_rows - row0));
  }
}

// The whole convolution: the filters' transforms, then per block of tile rows the inputs'
// transforms, the products and the outputs' transforms.
template <class Tap>
void convolve(int threads, const Layout& l, const float* in, Tap tap, float* out, bool accumulate,
              float* ws) {
  float* u = ws;
#pragma omp parallel num_threads(threads)
  {
    transform_filters(l, tap, u);  // ends in the team's barrier
    for_each_block(l, u + l.filter_floats(), l.thread_floats(),
                   [&](float* v, float* m, float* scratch, int64_t row0, int64_t rows) {
                     with_tiles_per_row(l.tiles_per_row, [&](auto tiles) {
                       constexpr int64_t kTiles = decltype(tiles)::value;
                       transform_inputs<kTiles>(l, in, row0, rows, v, scratch);
                       multiply(l, u, v, (rows * l.tiles_per_row + kLanes - 1) / kLanes, m);
                       if (accumulate)
                         transform_outputs<kTiles, true>(l, m, row0, rows, out);
                       else
                         transform_outputs<kTiles, false>(l, m, row0, rows, out);
                     });
                   });
  }
}

}  // namespace

bool computes(const Geometry& g, Direction direction) {
  return applies(g) && worthwhile(g, direction);
}

int64_t workspace_floats(int threads, const Geometry& g, Direction direction) {
  return Layout(g, direction, threads).workspace_floats(threads, direction);
}

void convolve(int threads, const float* in, const float* w, const Geometry& g, Direction direction,
              float* out, bool accumulate, float* ws) {
  const Layout l(g, direction, threads);
  if (direction == Direction::Forward) {
    const auto tap = [&](int64_t k, int64_t c, int64_t r, int64_t s) {
      return w[((k * g.c + c) * 3 + r) * 3 + s];
    };
    convolve(threads, l, in, tap, out, accumulate, ws);
  } else {
    // Output c of the data gradient reads input k through tap (2 - r, 2 - s) of filter (k, c).
    const auto tap = [&](int64_t c, int64_t k, int64_t r, int64_t s) {
      return w[((k * g.c + c) * 3 + 2 - r) * 3 + 2 - s];
    };
    convolve(threads, l, in, tap, out, accumulate, ws);
  }
}

void filter_gradient(int threads, const float* x, const float* dy, const Geometry& g, float* dw,
                     float* ws) {
  const Layout l(g, Direction::FilterGradient, threads);
  const int64_t per_thread = l.thread_floats() + l.sums_floats();
  const auto sums = [&](int t) { return ws + t * per_thread + l.thread_floats(); };
#pragma omp parallel num_threads(threads)
  {
    // Every thread's sums zeroed, over whatever team the runtime gives (32 MB at 512 channels).
#pragma omp for schedule(static)
    for (int t = 0; t < threads; ++t) std::fill(sums(t), sums(t) + l.sums_floats(), 0.0f);
    for_each_block(l, ws, per_thread,
                   [&](float* v, float* d, float* scratch, int64_t row0, int64_t rows) {
                     with_tiles_per_row(l.tiles_per_row, [&](auto tiles) {
                       constexpr int64_t kTiles = decltype(tiles)::value;
                       transform_inputs<kTiles>(l, x, row0, rows, v, scratch);
                       transform_output_gradients<kTiles>(l, dy, row0, rows, d);
                     });
                     multiply_summed(l, d, v, rows * l.tiles_per_row, sums(omp_get_thread_num()));
                   });
  }
  transform_filter_gradients(threads, l, sums, dw);
}

}  // namespace psgd::cpu::winograd
