// The direct filter gradient of 3x3 filters: dw[k][c][tap] sums, over every output pixel of every
// image, dy[k] at the pixel times x[c] at the pixel shifted by the tap. One of the two is copied
// with its channels last, so that a vector holds kLanes of its channels at one pixel, and the
// other is broadcast from its planes; an accumulator per (broadcast channel, tap) then holds
// kLanes dw values, and nothing is summed across lanes. Every vector load of the products is one
// pixel's channels, at a multiple of kLanes floats into the (64-byte aligned) workspace: no
// wrap-around lanes, no loads across cache lines, no shuffles (only the channels-last copy
// shuffles, on AVX2).
//   Over input channels (C a multiple of the lanes): x channels-last and zero-padded, dy
//   broadcast; per pixel, 9 input loads feed every output channel of the block (with 16
//   registers, one filter row at a time, 1 load at stride 1 and 2 at stride 2).
//   Over output channels (otherwise, K a multiple of the lanes: the first layer's 3 channels):
//   dy channels-last, x broadcast from its padded planes; per pixel one dy load feeds every tap
//   of every input channel of the block.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/conv2d_direct_plane.h"
#include "kernels/cpu/thread_partials.h"

namespace psgd::cpu::direct {
namespace {

// Blocks of broadcast channels by filter rows: each broadcast channel adds an accumulator per
// tap. With 32 registers: 3 channels by all 3 rows, 27 accumulators (over input channels: 9
// input loads and 3 broadcasts per 27 FMAs). With 16: over input channels 4 channels by one
// filter row, the rows in turn, the row's inputs rolling in registers (12 accumulators, 3
// inputs, 1 broadcast; 1 load, 2 at stride 2, and 4 broadcasts per 12 FMAs; loading all three
// inputs per pixel spilled and ran at half the forward's rate on AVX2); over output channels 1
// channel by 3 rows (9).
#if defined(__AVX512F__)
constexpr int kBlock = 3;
constexpr int kBlockRows = 3;
constexpr int kBlockOverOutputs = 3;
#else
constexpr int kBlock = 4;
constexpr int kBlockRows = 1;
constexpr int kBlockOverOutputs = 1;
#endif
constexpr int kTaps = 9;
constexpr int64_t kChunkFloats = 256 * 1024;  // a chunk's padded images and dy: ~1 MB, in L2

// Per thread: a chunk of padded images (channels last over input channels, else planes), each
// followed over output channels by its dy channels-last (over input channels dy is read where it
// lies); then the thread's dw as [k][tap][c] over input channels, [c][tap][k] over output
// channels.
struct Layout {
  Layout(const Geometry& g, int threads)
      : padded(g),
        p(g.out_h()),
        q(g.out_w()),
        over_inputs(g.c % kLanes == 0),
        dy_floats(over_inputs ? 0 : p * q * g.k),
        // dy's rows of K floats start on a vector boundary
        image_floats((padded.hp * padded.wp * g.c + kLanes - 1) / kLanes * kLanes + dy_floats),
        // at most a thread's share of the images
        chunk(std::clamp<int64_t>(kChunkFloats / (image_floats + (over_inputs ? g.k * p * q : 0)),
                                  1, std::max<int64_t>((g.n + threads - 1) / threads, 1))),
        partial_floats(g.k * kTaps * g.c),
        thread_floats(chunk * image_floats + partial_floats) {}

  // Where an image's dy starts in its part of the chunk (over output channels).
  int64_t dy_offset() const { return image_floats - dy_floats; }

  PaddedImage padded;  // x padded: over output channels, copied as its planes
  int64_t p, q;        // the output plane
  bool over_inputs;
  int64_t dy_floats;     // per image, channels-last (over output channels)
  int64_t image_floats;  // per image, its dy included
  int64_t chunk, partial_floats, thread_floats;
};

// kLanes consecutive channels of one pixel: from[0], from[stride], ...
inline Vec gather_channels(const float* from, int64_t stride) {
#if defined(__AVX512F__)
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i index = _mm512_mullo_epi32(lane, _mm512_set1_epi32(int(stride)));
  // The masked form: GCC 12 warns of the unmasked one's undefined source.
  return Vec(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xffff, index, from, 4));
#elif defined(__AVX2__)
  const __m256i lane = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
  const __m256i index = _mm256_mullo_epi32(lane, _mm256_set1_epi32(int(stride)));
  return Vec(_mm256_i32gather_ps(from, index, 4));
#else
  Vec v;
  for (int i = 0; i < kLanes; ++i) v[i] = from[i * stride];
  return v;
#endif
}

#if defined(__AVX2__) && !defined(__AVX512F__)
// 8 pixels of 8 channels' rows (`stride` floats apart) to the 8 pixels' channels, `to_stride`
// floats apart: an 8x8 transpose in registers.
inline void transpose_8x8(const float* from, int64_t stride, float* to, int64_t to_stride) {
  static_assert(kLanes == 8, "a pixel's 8 channels fill a vector");
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(from + i * stride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      r[i + 2 * j] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], _MM_SHUFFLE(1, 0, 1, 0));
      r[i + 2 * j + 1] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], _MM_SHUFFLE(3, 2, 3, 2));
    }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(to + i * to_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(to + (i + 4) * to_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// A row's whole blocks of 8 pixels by 8 channels, transposed; returns the pixels done.
inline int64_t transpose_blocks(const float* from, int64_t w, int64_t stride, float* to,
                                int64_t to_stride) {
  int64_t x = 0;
  for (; x + 8 <= w; x += 8) transpose_8x8(from + x, stride, to + x * to_stride, to_stride);
  return x;
}
#else
// None: the gathers take every pixel.
inline int64_t transpose_blocks(const float*, int64_t, int64_t, float*, int64_t) {
  return 0;
}
#endif

// Planes (channels, h, w) into the interior of a buffer (h + 2 pad, padded_w, channels),
// channels last; the border stays as it was (zero from the first image). Along a row a block of
// channels at a time: consecutive gathers then read the same lines, which all channels' gathers
// at once would evict from their shared cache sets where a plane is a multiple of 4 KB (1.6x
// slower measured). On AVX-512 blocks of pixels by channels transposed in registers were no
// faster than the gathers; on AVX2, where Zen 3's gathers are microcoded, they are.
void copy_channels_last(const float* from, int64_t channels, int64_t h, int64_t w, int64_t pad,
                        int64_t padded_w, float* to) {
  const int64_t plane_floats = h * w;
  for (int64_t y = 0; y < h; ++y) {
    float* out = to + ((y + pad) * padded_w + pad) * channels;
    for (int64_t c = 0; c < channels; c += kLanes) {
      const float* in = from + c * plane_floats + y * w;
      int64_t x = transpose_blocks(in, w, plane_floats, out + c, channels);
      for (; x < w; ++x) store(out + x * channels + c, gather_channels(in + x, plane_floats));
    }
  }
}

// Adds a block's accumulators to the partial dw [k][tap][c] over input channels: output channels
// k0 .. k0 + kChannels, taps from first_tap on, input channels c0 .. c0 + kLanes.
template <int kChannels, int kBlockTaps>
void add_to_partial(const Vec (&acc)[kChannels][kBlockTaps], int64_t k0, int64_t first_tap,
                    int64_t c0, int64_t channels, float* partial) {
  for (int kk = 0; kk < kChannels; ++kk)
    for (int t = 0; t < kBlockTaps; ++t) {
      float* to = partial + ((k0 + kk) * kTaps + first_tap + t) * channels + c0;
      store(to, load(to) + acc[kk][t]);
    }
}

// Over input channels: adds to the partial dw[k0 .. k0 + kChannels][taps of rows r0 .. r0 + kRows]
// [c0 .. c0 + kLanes] the products of the chunk's `count` images, whose dy starts at dy.
template <int kChannels, int kRows>
void block_over_inputs(const float* images, const float* dy, int64_t count, int64_t k0, int64_t c0,
                       int64_t r0, const Geometry& g, const Layout& l, float* partial) {
  constexpr int kBlockTaps = 3 * kRows;
  Vec acc[kChannels][kBlockTaps] = {};
  const int64_t dy_plane = l.p * l.q, row = l.padded.wp * g.c, output_step = g.stride * g.c;
  for (int64_t i = 0; i < count; ++i) {
    const float* image = images + i * l.image_floats + r0 * row + c0;
    const float* d = dy + (i * g.k + k0) * dy_plane;
    for (int64_t p = 0; p < l.p; ++p) {
      const float* in_row = image + p * g.stride * row;
      const float* dy_row = d + p * l.q;
      for (int64_t q = 0; q < l.q; ++q) {
        float dv[kChannels];
#pragma GCC unroll 4
        for (int kk = 0; kk < kChannels; ++kk) dv[kk] = dy_row[kk * dy_plane + q];
#pragma GCC unroll 9
        for (int t = 0; t < kBlockTaps; ++t) {
          const Vec in = load(in_row + t / 3 * row + q * output_step + t % 3 * g.c);
#pragma GCC unroll 4
          for (int kk = 0; kk < kChannels; ++kk) acc[kk][t] += in * dv[kk];  // dy broadcast
        }
      }
    }
  }
  add_to_partial(acc, k0, r0 * 3, c0, g.c, partial);
}

// The same for one filter row, where a pixel's right tap is the next pixel's left one (and, at
// stride 1, its middle tap the next one's left): the inputs roll along the row in registers, one
// load per pixel and tap of stride.
template <int kChannels, int kStride>
void row_block_over_inputs(const float* images, const float* dy, int64_t count, int64_t k0,
                           int64_t c0, int64_t r0, const Geometry& g, const Layout& l,
                           float* partial) {
  Vec acc[kChannels][3] = {};
  const int64_t dy_plane = l.p * l.q, row = l.padded.wp * g.c, pixel = g.c;
  for (int64_t i = 0; i < count; ++i) {
    const float* image = images + i * l.image_floats + r0 * row + c0;
    const float* d = dy + (i * g.k + k0) * dy_plane;
    for (int64_t p = 0; p < l.p; ++p) {
      const float* in_row = image + p * kStride * row;
      const float* dy_row = d + p * l.q;
      Vec left = load(in_row), middle;
      if constexpr (kStride == 1) middle = load(in_row + pixel);
      for (int64_t q = 0; q < l.q; ++q) {
        const float* at = in_row + q * kStride * pixel;
        if constexpr (kStride == 2) middle = load(at + pixel);
        const Vec right = load(at + 2 * pixel);
#pragma GCC unroll 4
        for (int kk = 0; kk < kChannels; ++kk) {
          const float dv = dy_row[kk * dy_plane + q];  // dy broadcast
          acc[kk][0] += left * dv;
          acc[kk][1] += middle * dv;
          acc[kk][2] += right * dv;
        }
        if constexpr (kStride == 1) {
          left = middle;
          middle = right;
        } else {
          left = right;
        }
      }
    }
  }
  add_to_partial(acc, k0, r0 * 3, c0, g.c, partial);
}

static_assert(kMaxStride == 2, "the filter rows roll at strides 1 and 2");

template <int kChannels>
void blocks_over_inputs(const float* images, const float* dy, int64_t count, int64_t k0,
                        const Geometry& g, const Layout& l, float* partial) {
  for (int64_t c0 = 0; c0 < g.c; c0 += kLanes)
    for (int64_t r0 = 0; r0 < 3; r0 += kBlockRows)
      if constexpr (kBlockRows > 1)
        block_over_inputs<kChannels, kBlockRows>(images, dy, count, k0, c0, r0, g, l, partial);
      else if (g.stride == 1)
        row_block_over_inputs<kChannels, 1>(images, dy, count, k0, c0, r0, g, l, partial);
      else
        row_block_over_inputs<kChannels, 2>(images, dy, count, k0, c0, r0, g, l, partial);
}

// Over output channels: adds to the partial dw[c0 .. c0 + kChannels][tap][k0 .. k0 + kLanes] the
// products of the chunk's `count` images.
template <int kChannels>
void block_over_outputs(const float* images, int64_t count, int64_t c0, int64_t k0,
                        const Geometry& g, const Layout& l, float* partial) {
  Vec acc[kChannels][kTaps] = {};
  const int64_t in_plane = l.padded.hp * l.padded.wp;
  for (int64_t i = 0; i < count; ++i) {
    const float* image = images + i * l.image_floats;
    const float* x = image + c0 * in_plane;
    const float* d = image + l.dy_offset() + k0;
    for (int64_t p = 0; p < l.p; ++p)
      for (int64_t q = 0; q < l.q; ++q) {
        const Vec dv = load(d + (p * l.q + q) * g.k);
        const float* at = x + p * l.padded.wp + q;
        // Opaque, so that GCC does not carry the taps shared with the next pixel over in
        // registers (27 live values spill), and loads each with its FMA instead.
        asm("" : "+r"(at));
#pragma GCC unroll 4
        for (int cc = 0; cc < kChannels; ++cc)
#pragma GCC unroll 9
          for (int t = 0; t < kTaps; ++t)
            acc[cc][t] += dv * at[cc * in_plane + t / 3 * l.padded.wp + t % 3];  // x broadcast
      }
  }
  for (int cc = 0; cc < kChannels; ++cc)
    for (int t = 0; t < kTaps; ++t) {
      float* to = partial + ((c0 + cc) * kTaps + t) * g.k + k0;
      store(to, load(to) + acc[cc][t]);
    }
}

template <int kChannels>
void blocks_over_outputs(const float* images, int64_t count, int64_t c0, const Geometry& g,
                         const Layout& l, float* partial) {
  for (int64_t k0 = 0; k0 < g.k; k0 += kLanes)
    block_over_outputs<kChannels>(images, count, c0, k0, g, l, partial);
}

// Calls blocks(first, size) for blocks of `total` channels of size kSize, then 2, then 1;
// blocks of 3 leaving 1 end in 2 + 2 instead (a block of 1 loads as much as it computes).
template <int kSize, class F>
void in_blocks(int64_t total, F blocks) {
  int64_t full = total / kSize;
  if (kSize == 3 && total % 3 == 1 && full > 0) --full;
  int64_t first = 0;
  for (; first < full * kSize; first += kSize) blocks(first, std::integral_constant<int, kSize>{});
  for (; first + 2 <= total; first += 2) blocks(first, std::integral_constant<int, 2>{});
  if (first < total) blocks(first, std::integral_constant<int, 1>{});
}

// One chunk's products for all channels.
void chunk_gradient(const float* images, const float* dy, int64_t count, const Geometry& g,
                    const Layout& l, float* partial) {
  if (l.over_inputs) {
    in_blocks<kBlock>(g.k, [&](int64_t k0, auto size) {
      blocks_over_inputs<decltype(size)::value>(images, dy, count, k0, g, l, partial);
    });
  } else {
    in_blocks<kBlockOverOutputs>(g.c, [&](int64_t c0, auto size) {
      blocks_over_outputs<decltype(size)::value>(images, count, c0, g, l, partial);
    });
  }
}

}  // namespace

bool computes_filter_gradient(const Geometry& g) {
  // The gathers' int32 offsets reach (kLanes - 1) planes. On small planes, where the forward
  // takes the GEMM, the GEMM is as fast here too (VGG16-bn's step, 4x4 and 2x2 layers direct:
  // 1,410-1,449 ms against 1,392-1,404).
  const int64_t largest_plane = std::max(g.h * g.w, g.out_h() * g.out_w());
  return g.r == 3 && g.s == 3 && (g.c % kLanes == 0 || (g.stride == 1 && g.k % kLanes == 0)) &&
         largest_plane * kLanes <= INT32_MAX && worthwhile(g);
}

int64_t filter_gradient_workspace_floats(int threads, const Geometry& g) {
  return threads * Layout(g, threads).thread_floats;
}

void filter_gradient(int threads, const float* x, const float* dy, const Geometry& g, float* dw,
                     float* ws) {
  const Layout l(g, threads);
  const int64_t in_floats = g.c * g.h * g.w, out_floats = g.k * l.p * l.q;
  const auto partial = [&](int t) { return ws + t * l.thread_floats + l.chunk * l.image_floats; };
  int team = 1;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), size = omp_get_num_threads();
    if (t == 0) team = size;
    float* images = ws + t * l.thread_floats;
    // Zero once: borders and the thread's partial dw.
    std::fill(images, images + l.thread_floats, 0.0f);
    // An equal contiguous share of the images per thread, taken a chunk at a time.
    const int64_t last = g.n * (t + 1) / size;
    for (int64_t n0 = g.n * t / size; n0 < last; n0 += l.chunk) {
      const int64_t count = std::min(l.chunk, last - n0);
      for (int64_t i = 0; i < count; ++i) {
        float* image = images + i * l.image_floats;
        const float* image_x = x + (n0 + i) * in_floats;
        if (l.over_inputs) {
          copy_channels_last(image_x, g.c, g.h, g.w, g.pad, l.padded.wp, image);
        } else {
          copy_interior(image_x, g, l.padded, image);
          copy_channels_last(dy + (n0 + i) * out_floats, g.k, l.p, l.q, 0, l.q,
                             image + l.dy_offset());
        }
      }
      chunk_gradient(images, dy + n0 * out_floats, count, g, l, partial(t));
    }
  }
  // dw is [k][c][tap].
  const auto source = [&](int64_t i) {
    const int64_t k = i / (g.c * kTaps), c = i / kTaps % g.c, tap = i % kTaps;
    return l.over_inputs ? (k * kTaps + tap) * g.c + c : (c * kTaps + tap) * g.k + k;
  };
  sum_in_thread_order(team, l.partial_floats, partial, source, dw);
}

}  // namespace psgd::cpu::direct
