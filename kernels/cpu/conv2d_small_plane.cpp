// The dense map of a convolution on small planes (see conv2d_small_plane.h).
#include <cblas.h>

#include "kernels/cpu/conv2d_small_plane.h"

namespace psgd::cpu::small_plane {
namespace {

int64_t map_rows(const Geometry& g) {
  return g.k * g.out_h() * g.out_w();
}
int64_t map_columns(const Geometry& g) {
  return g.c * g.h * g.w;
}

// f(map index, filter index) for every entry of W, which is all of them: output (k, p, q) reads
// input (c, ih, iw) through tap (ih - p + pad, iw - q + pad). Rows split over OpenMP's team.
template <class F>
void for_each_entry(const Geometry& g, F f) {
  const int64_t p_count = g.out_h(), q_count = g.out_w();
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < g.k; ++k)
    for (int64_t p = 0; p < p_count; ++p)
      for (int64_t q = 0; q < q_count; ++q) {
        const int64_t row = (k * p_count + p) * q_count + q;
        for (int64_t c = 0; c < g.c; ++c)
          for (int64_t ih = 0; ih < g.h; ++ih)
            for (int64_t iw = 0; iw < g.w; ++iw) {
              const int64_t r = ih - p + g.pad, s = iw - q + g.pad;
              f(row * map_columns(g) + (c * g.h + ih) * g.w + iw,
                ((k * g.c + c) * g.r + r) * g.s + s);
            }
      }
}

void build_map(const float* w, const Geometry& g, float* map) {
  for_each_entry(g, [&](int64_t entry, int64_t tap) { map[entry] = w[tap]; });
}

}  // namespace

bool computes(const Geometry& g) {
  // Tap row ih - p + pad within [0, R) for every ih < H and p < P = H + 2 pad - R + 1: the
  // smallest, pad - P + 1 = R - H - pad, and the largest, H - 1 + pad, both mean H + pad <= R.
  // The same for the columns.
  return g.stride == 1 && g.h + g.pad <= g.r && g.w + g.pad <= g.s && g.out_h() > 0 &&
         g.out_w() > 0;
}

int64_t workspace_floats(const Geometry& g) {
  return map_rows(g) * map_columns(g);
}

void forward(const float* x, const float* w, const Geometry& g, float* y, float* ws) {
  build_map(w, g, ws);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.n, map_rows(g), map_columns(g), 1.0f, x,
              map_columns(g), ws, map_columns(g), 0.0f, y, map_rows(g));
}

void data_gradient(const float* dy, const float* w, const Geometry& g, float* dx, bool accumulate,
                   float* ws) {
  build_map(w, g, ws);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.n, map_columns(g), map_rows(g), 1.0f, dy,
              map_rows(g), ws, map_columns(g), accumulate ? 1.0f : 0.0f, dx, map_columns(g));
}

void filter_gradient(const float* x, const float* dy, const Geometry& g, float* dw, float* ws) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, map_rows(g), map_columns(g), g.n, 1.0f, dy,
              map_rows(g), x, map_columns(g), 0.0f, ws, map_columns(g));
  // Each filter's taps in one thread's rows (k), summed in a fixed order.
  const int64_t taps = g.k * g.c * g.r * g.s;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < taps; ++i) dw[i] = 0.0f;
  for_each_entry(g, [&](int64_t entry, int64_t tap) { dw[tap] += ws[entry]; });
}

}  // namespace psgd::cpu::small_plane
