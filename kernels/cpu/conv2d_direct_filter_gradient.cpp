// The direct filter gradient of 3x3 filters: per (output channel, input channel) pair, nine
// vector accumulators sum dy's vectors times the input shifted to each tap.
#include <omp.h>

#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/conv2d_direct_plane.h"
#include "kernels/cpu/thread_partials.h"

namespace psgd::cpu::direct {
namespace {

// Tiles: kBlockK output channels by the nine taps of one input channel.
#if defined(__AVX512F__)
constexpr int kBlockK = 3;  // 27 accumulators, 3 dy vectors and the shifted input
#else
constexpr int kBlockK = 1;  // 9 accumulators
#endif
constexpr int kTaps = 9;
constexpr int64_t kChunkFloats = 256 * 1024;  // a chunk's padded images and dy: ~1 MB, in L2

// Per thread: a chunk of padded images, each followed, along the flat plane only, by its dy at
// the flat positions of its outputs (zero in the wrap-around lanes and the tail); then the
// thread's dw. By rows, dy is read where it lies. (Along the flat plane the wrap-around lanes
// multiply real pixels by those zeros: an infinite input gives NaN there where the GEMM path
// stays finite; only a run that has already diverged can tell.)
struct Layout {
  explicit Layout(const Geometry& g)
      : plane(g),
        per_image_floats(plane.image_floats + (plane.rows ? 0 : g.k * plane.flat_rounded)),
        // dy read in place takes cache as well
        chunk(std::clamp<int64_t>(
            kChunkFloats / (plane.image_floats + g.k * plane.vectors * kLanes), 1,
            std::max<int64_t>(g.n, 1))),
        partial_floats(g.k * g.c * kTaps),
        thread_floats(chunk * per_image_floats + partial_floats) {}

  Plane plane;
  int64_t per_image_floats, chunk, partial_floats, thread_floats;
};

// The vectors of a plane in order, each with its inputs' offset for tap (0, 0), as
// Plane::input_offset gives it but without a division per vector.
struct VectorWalk {
  explicit VectorWalk(const Plane& l) : l(l) {}

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

  const Plane& l;
  int64_t offset = 0, q0 = 0;
};

// dy's planes at the flat positions of their outputs.
void copy_dy_to_flat(const float* dy, const Geometry& g, const Plane& l, float* flat) {
  for (int64_t k = 0; k < g.k; ++k)
    for (int64_t p = 0; p < l.p; ++p)
      copy_row(dy + (k * l.p + p) * l.q, l.q, flat + k * l.flat_rounded + p * l.wp);
}

// Adds to dw[k0 .. k0 + kChannels][c] the products of the chunk's `count` images: images padded,
// dy vector j of channel k of image i at dys + i * dy_image + k * dy_plane + j * kLanes.
template <int kChannels, bool kHalves>
void gradient_block(const float* images, const float* dys, int64_t dy_image, int64_t dy_plane,
                    int64_t count, int64_t k0, int64_t c, const Geometry& g, const Layout& l,
                    float* dw) {
  const Plane& plane = l.plane;
  Vec acc[kChannels][kTaps] = {};
  for (int64_t i = 0; i < count; ++i) {
    const float* x = images + i * l.per_image_floats + c * plane.hp * plane.wp;
    const float* d = dys + i * dy_image + k0 * dy_plane;
    VectorWalk walk(plane);
    for (int64_t j = 0; j < plane.vectors; ++j, walk.next()) {
      Vec dv[kChannels];
#pragma GCC unroll 4
      for (int kk = 0; kk < kChannels; ++kk) dv[kk] = load(d + kk * dy_plane + j * kLanes);
#pragma GCC unroll 9
      for (int t = 0; t < kTaps; ++t) {
        const float* at = x + walk.offset + t / 3 * plane.wp + t % 3;
        const Vec in = kHalves ? load_halves(at, plane.wp) : load(at);
#pragma GCC unroll 4
        for (int kk = 0; kk < kChannels; ++kk) acc[kk][t] += dv[kk] * in;
      }
    }
  }
  for (int kk = 0; kk < kChannels; ++kk)
    for (int t = 0; t < kTaps; ++t) dw[((k0 + kk) * g.c + c) * kTaps + t] += lane_sum(acc[kk][t]);
}

// One chunk's products for all (k, c) pairs: blocks of kBlockK output channels, then the one or
// two left.
template <bool kHalves>
void chunk_gradient(const float* images, const float* dys, int64_t dy_image, int64_t dy_plane,
                    int64_t count, const Geometry& g, const Layout& l, float* dw) {
  static_assert(kBlockK <= 3, "the tail below handles one or two channels");
  int64_t k0 = 0;
  for (; k0 + kBlockK <= g.k; k0 += kBlockK)
    for (int64_t c = 0; c < g.c; ++c)
      gradient_block<kBlockK, kHalves>(images, dys, dy_image, dy_plane, count, k0, c, g, l, dw);
  for (int64_t c = 0; c < g.c; ++c) {
    if (g.k - k0 == 2)
      gradient_block<2, kHalves>(images, dys, dy_image, dy_plane, count, k0, c, g, l, dw);
    if (g.k - k0 == 1)
      gradient_block<1, kHalves>(images, dys, dy_image, dy_plane, count, k0, c, g, l, dw);
  }
}

}  // namespace

bool computes_filter_gradient(const Geometry& g) { return g.r == 3 && g.s == 3 && worthwhile(g); }

int64_t filter_gradient_workspace_floats(int threads, const Geometry& g) {
  return threads * Layout(g).thread_floats;
}

void filter_gradient(int threads, const float* x, const float* dy, const Geometry& g, float* dw,
                     float* ws) {
  const Layout l(g);
  const Plane& plane = l.plane;
  const int64_t in_floats = g.c * g.h * g.w, out_floats = g.k * plane.p * plane.q;
  const auto partial = [&](int t) { return ws + t * l.thread_floats + l.chunk * l.per_image_floats; };
  int team = 1;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), size = omp_get_num_threads();
    if (t == 0) team = size;
    float* images = ws + t * l.thread_floats;
    float* flat_dys = images + plane.image_floats;  // along the flat plane: image i, then its dy
    // Zero once: borders, wrap-around lanes and the thread's partial dw.
    std::fill(images, images + l.thread_floats, 0.0f);
    // An equal contiguous share of the images per thread, taken a chunk at a time.
    const int64_t last = g.n * (t + 1) / size;
    for (int64_t n0 = g.n * t / size; n0 < last; n0 += l.chunk) {
      const int64_t count = std::min(l.chunk, last - n0);
      for (int64_t i = 0; i < count; ++i) {
        copy_interior(x + (n0 + i) * in_floats, g, plane, images + i * l.per_image_floats);
        if (!plane.rows)
          copy_dy_to_flat(dy + (n0 + i) * out_floats, g, plane, flat_dys + i * l.per_image_floats);
      }
      const float* dy_chunk = dy + n0 * out_floats;
      const int64_t dy_plane = plane.p * plane.q;
      if (plane.halves)
        chunk_gradient<true>(images, dy_chunk, out_floats, dy_plane, count, g, l, partial(t));
      else if (plane.rows)
        chunk_gradient<false>(images, dy_chunk, out_floats, dy_plane, count, g, l, partial(t));
      else
        chunk_gradient<false>(images, flat_dys, l.per_image_floats, plane.flat_rounded, count, g,
                              l, partial(t));
    }
  }
  sum_in_thread_order(team, l.partial_floats, partial, dw);
}

}  // namespace psgd::cpu::direct
