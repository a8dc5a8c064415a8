// The direct filter gradient of 3x3 filters. Each image is copied into a zero-padded buffer with
// its channels last, so that a vector holds kLanes input channels of one pixel; for a block of
// output channels, an accumulator per channel and tap then sums, over every output pixel, dy's
// value broadcast times the input vector at the pixel shifted by the tap. Every vector load
// is of whole pixels, no lane is wasted on padding, and no sum across lanes is needed: each lane
// holds one input channel's dw.
#include <omp.h>

#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/conv2d_direct_plane.h"
#include "kernels/cpu/thread_partials.h"

namespace psgd::cpu::direct {
namespace {

// Blocks of output channels by filter rows. Each output channel adds an accumulator per tap and
// reuses the input vectors loaded per pixel. With 32 registers: 3 channels by all 3 rows (27
// accumulators; 9 input loads and 3 broadcasts per 27 FMAs). With 16: 4 channels by 1 row, the
// rows in turn (12 accumulators; 3 loads and 4 broadcasts per 12 FMAs).
#if defined(__AVX512F__)
constexpr int kBlockK = 3;
constexpr int kBlockRows = 3;
#else
constexpr int kBlockK = 4;
constexpr int kBlockRows = 1;
#endif
constexpr int kTaps = 9;
constexpr int64_t kChunkFloats = 256 * 1024;  // a chunk's padded images and dy: ~1 MB, in L2

// Per thread: a chunk of padded channels-last images (dy is read where it lies), then the
// thread's dw as [k][tap][c].
struct Layout {
  explicit Layout(const Geometry& g)
      : hp(g.h + 2 * g.pad),
        wp(g.w + 2 * g.pad),
        p(g.out_h()),
        q(g.out_w()),
        image_floats(hp * wp * g.c),
        chunk(std::clamp<int64_t>(kChunkFloats / (image_floats + g.k * p * q), 1,
                                  std::max<int64_t>(g.n, 1))),
        partial_floats(g.k * kTaps * g.c),
        thread_floats(chunk * image_floats + partial_floats) {}

  int64_t hp, wp;  // the padded input plane
  int64_t p, q;    // the output plane
  int64_t image_floats, chunk, partial_floats, thread_floats;
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

// The image (C, H, W) into the interior of its padded copy (Hp, Wp, C); the border stays zero
// from the first image.
void copy_channels_last(const float* x, const Geometry& g, const Layout& l, float* image) {
  const int64_t plane = g.h * g.w;
  for (int64_t h = 0; h < g.h; ++h)
    for (int64_t w = 0; w < g.w; ++w) {
      float* to = image + ((h + g.pad) * l.wp + w + g.pad) * g.c;
      for (int64_t c = 0; c < g.c; c += kLanes)
        store(to + c, gather_channels(x + c * plane + h * g.w + w, plane));
    }
}

// Adds to the partial dw[k0 .. k0 + kChannels][taps of rows r0 .. r0 + kRows][c0 .. c0 + kLanes]
// the products of the chunk's `count` images, whose dy starts at dy.
template <int kChannels, int kRows>
void gradient_block(const float* images, const float* dy, int64_t count, int64_t k0, int64_t c0,
                    int64_t r0, const Geometry& g, const Layout& l, float* partial) {
  constexpr int kBlockTaps = 3 * kRows;
  Vec acc[kChannels][kBlockTaps] = {};
  const int64_t dy_plane = l.p * l.q, row = l.wp * g.c;
  for (int64_t i = 0; i < count; ++i) {
    const float* image = images + i * l.image_floats + r0 * row + c0;
    const float* d = dy + (i * g.k + k0) * dy_plane;
    for (int64_t p = 0; p < l.p; ++p) {
      const float* in_row = image + p * row;
      const float* dy_row = d + p * l.q;
      for (int64_t q = 0; q < l.q; ++q) {
        float dv[kChannels];
#pragma GCC unroll 4
        for (int kk = 0; kk < kChannels; ++kk) dv[kk] = dy_row[kk * dy_plane + q];
#pragma GCC unroll 9
        for (int t = 0; t < kBlockTaps; ++t) {
          const Vec in = load(in_row + t / 3 * row + (q + t % 3) * g.c);
#pragma GCC unroll 4
          for (int kk = 0; kk < kChannels; ++kk) acc[kk][t] += in * dv[kk];  // dy broadcast
        }
      }
    }
  }
  for (int kk = 0; kk < kChannels; ++kk)
    for (int t = 0; t < kBlockTaps; ++t) {
      float* to = partial + ((k0 + kk) * kTaps + r0 * 3 + t) * g.c + c0;
      store(to, load(to) + acc[kk][t]);
    }
}

template <int kChannels>
void channel_blocks(const float* images, const float* dy, int64_t count, int64_t k0,
                    const Geometry& g, const Layout& l, float* partial) {
  for (int64_t c0 = 0; c0 < g.c; c0 += kLanes)
    for (int64_t r0 = 0; r0 < 3; r0 += kBlockRows)
      gradient_block<kChannels, kBlockRows>(images, dy, count, k0, c0, r0, g, l, partial);
}

// One chunk's products for all output channels: blocks of kBlockK, then of 2, then 1; blocks of
// 3 leaving 1 end in 2 + 2 instead (a block of 1 loads as many inputs as it does FMAs).
void chunk_gradient(const float* images, const float* dy, int64_t count, const Geometry& g,
                    const Layout& l, float* partial) {
  int64_t blocks = g.k / kBlockK;
  if (kBlockK == 3 && g.k % 3 == 1 && blocks > 0) --blocks;
  int64_t k0 = 0;
  for (; k0 < blocks * kBlockK; k0 += kBlockK)
    channel_blocks<kBlockK>(images, dy, count, k0, g, l, partial);
  for (; k0 + 2 <= g.k; k0 += 2) channel_blocks<2>(images, dy, count, k0, g, l, partial);
  if (k0 < g.k) channel_blocks<1>(images, dy, count, k0, g, l, partial);
}

}  // namespace

bool computes_filter_gradient(const Geometry& g) {
  return g.r == 3 && g.s == 3 && g.c % kLanes == 0 && worthwhile(g);
}

int64_t filter_gradient_workspace_floats(int threads, const Geometry& g) {
  return threads * Layout(g).thread_floats;
}

void filter_gradient(int threads, const float* x, const float* dy, const Geometry& g, float* dw,
                     float* ws) {
  const Layout l(g);
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
      for (int64_t i = 0; i < count; ++i)
        copy_channels_last(x + (n0 + i) * in_floats, g, l, images + i * l.image_floats);
      chunk_gradient(images, dy + n0 * out_floats, count, g, l, partial(t));
    }
  }
  // The partials are [k][tap][c], dw is [k][c][tap].
  const auto source = [&](int64_t i) {
    const int64_t k = i / (g.c * kTaps), c = i / kTaps % g.c, tap = i % kTaps;
    return (k * kTaps + tap) * g.c + c;
  };
  sum_in_thread_order(team, l.partial_floats, partial, source, dw);
}

}  // namespace psgd::cpu::direct
