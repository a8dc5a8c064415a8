// Average and max pooling on the CPU (no padding, floor output size), for float32 and bf16
// activations, one thread per (n, c) plane. Backward passes gather per input element from the
// windows that cover it, as the CUDA kernels do, so each gradient is stored (rounded) once; where
// the windows tile the plane (kernel == stride), each window spreads its gradient instead.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/cpu_ops.h"

namespace psgd::cpu {
namespace {

struct PoolDims {
  int64_t planes, h, w, p, q, k, stride;
};

PoolDims dims_of(const Tensor& x, Pool2dGeometry g) {
  const Shape y = ops::pool2d_output_shape(x.shape, g);
  return {x.n() * x.c(), x.h(), x.w(), y[2], y[3], g.kernel, g.stride};
}

// The windows [p0, p1) x [q0, q1) that cover input element (r, c).
struct Cover {
  int64_t p0, p1, q0, q1;
};

Cover covering(const PoolDims& d, int64_t r, int64_t c) {
  return {r < d.k ? 0 : (r - d.k) / d.stride + 1, std::min(d.p, r / d.stride + 1),
          c < d.k ? 0 : (c - d.k) / d.stride + 1, std::min(d.q, c / d.stride + 1)};
}

// Backward passes gather: each input element sums, in float32, what the windows covering it
// send back (share(plane, p, q, element)), and is stored once.
template <class T, class F>
void gather_gradients(const PoolDims& d, const Tensor& dx, GradMode mode, F&& share) {
  T* gx = dx.as<T>();
  const bool accumulate = mode == GradMode::Accumulate;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    for (int64_t r = 0; r < d.h; ++r) {
      for (int64_t c = 0; c < d.w; ++c) {
        const Cover cover = covering(d, r, c);
        float sum = 0.0f;
        for (int64_t p = cover.p0; p < cover.p1; ++p)
          for (int64_t q = cover.q0; q < cover.q1; ++q) sum += share(pl, p, q, r * d.w + c);
        const int64_t e = (pl * d.h + r) * d.w + c;
        store(gx, e, accumulate ? load(gx, e) + sum : sum);
      }
    }
  }
}

// Windows that tile the plane without overlap (kernel == stride): backward passes spread each
// window's gradient, a window row at a time (spread_windows).
bool tiled(const PoolDims& d) {
  return d.k == d.stride;
}

// Calls body(k, stride) with both as compile-time constants for 2x2 windows at stride 2 (VGG's
// pools), so that the loops over a window's elements unroll into straight vector code;
// otherwise with d.k and d.stride.
template <class Body>
void with_window_size(const PoolDims& d, Body&& body) {
  if (d.k == 2 && d.stride == 2)
    body(std::integral_constant<int64_t, 2>{}, std::integral_constant<int64_t, 2>{});
  else
    body(d.k, d.stride);
}

// Backward passes over tiled windows: one pass along dx's rows, without looking for the windows
// that cover each element (ResNet's 8x8 average: 0.99 -> 0.13 ms). fill(plane, p, rows, put)
// gives dx's k rows under window row p (rows: the first, d.w apart) their gradients, columns
// [0, q * k), through put(row, column, value); elements past the last window take none.
template <class T, class Fill>
void spread_windows(const PoolDims& d, const Tensor& dx, GradMode mode, Fill&& fill) {
  T* gx = dx.as<T>();
  const bool accumulate = mode == GradMode::Accumulate;
  // Two kinds of put, so that neither loop branches per element.
  const auto add = [](T* row, int64_t c, float value) { store(row, c, load(row, c) + value); };
  const auto write = [](T* row, int64_t c, float value) { store(row, c, value); };
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    T* plane = gx + pl * d.h * d.w;
    for (int64_t p = 0; p < d.p; ++p) {
      T* rows = plane + p * d.k * d.w;
      accumulate ? fill(pl, p, rows, add) : fill(pl, p, rows, write);
    }
    if (accumulate) continue;
    for (int64_t r = 0; r < d.h; ++r)
      for (int64_t c = r < d.p * d.k ? d.q * d.k : 0; c < d.w; ++c) store(plane + r * d.w, c, 0.0f);
  }
}

// Window q of the window row whose first row is `top` (rows w apart), k its size: the position
// i * k + j of its first NaN or else first maximum, and that value.
template <class T, class K, class S>
inline int32_t window_maximum(const T* top, int64_t w, K k, S stride, int64_t q, float& best) {
  int32_t pick = 0;
  best = load(top, q * stride);
  for (int32_t e = 1; e < k * k; ++e) {
    const float v = load(top, e / k * w + q * stride + e % k);
    // v is taken where it is greater or NaN, unless a NaN was taken before. Written this way,
    // GCC 12 vectorises the loops around it (not with a `take` flag shared by both selects).
    pick = !(v <= best) && best == best ? e : pick;
    best = !(v <= best) && best == best ? v : best;
  }
  return pick;
}

// Row-major index within the input plane of window (p, q)'s element window_maximum picks.
template <class T>
int64_t argmax_in_window(const PoolDims& d, const T* plane, int64_t p, int64_t q) {
  float best;
  const int64_t e = window_maximum(plane + p * d.stride * d.w, d.w, d.k, d.stride, q, best);
  return (p * d.stride + e / d.k) * d.w + q * d.stride + e % d.k;
}

}  // namespace

void avg_pool_forward(const Tensor& x, Pool2dGeometry g, const Tensor& y) {
  const PoolDims d = dims_of(x, g);
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    const T* xs = x.as<T>();
    T* ys = y.as<T>();
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < d.planes; ++pl) {
      const T* in = xs + pl * d.h * d.w;
      for (int64_t p = 0; p < d.p; ++p) {
        for (int64_t q = 0; q < d.q; ++q) {
          float sum = 0.0f;
          for (int64_t i = 0; i < d.k; ++i)
            for (int64_t j = 0; j < d.k; ++j)
              sum += load(in, (p * d.stride + i) * d.w + q * d.stride + j);
          store(ys, (pl * d.p + p) * d.q + q, sum * inv);
        }
      }
    }
  });
}

void avg_pool_backward(const Tensor& dy, Pool2dGeometry g, const Tensor& dx, GradMode dx_mode) {
  const PoolDims d = dims_of(dx, g);
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
  with_activation_type(dy.dtype, [&](auto t) {
    using T = decltype(t);
    const T* gy = dy.as<T>();
    const auto share = [&](int64_t pl, int64_t p, int64_t q) {
      return load(gy, (pl * d.p + p) * d.q + q) * inv;
    };
    if (tiled(d)) {
      spread_windows<T>(d, dx, dx_mode, [&](int64_t pl, int64_t p, T* rows, auto put) {
        for (int64_t q = 0; q < d.q; ++q) {
          const float value = share(pl, p, q);
          for (int64_t i = 0; i < d.k; ++i)
            for (int64_t j = 0; j < d.k; ++j) put(rows + i * d.w, q * d.k + j, value);
        }
      });
      return;
    }
    gather_gradients<T>(d, dx, dx_mode, [&](int64_t pl, int64_t p, int64_t q, int64_t) {
      return share(pl, p, q);
    });
  });
}

void max_pool_forward(const Tensor& x, Pool2dGeometry g, const Tensor& y) {
  const PoolDims d = dims_of(x, g);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    const T* xs = x.as<T>();
    T* ys = y.as<T>();
    with_window_size(d, [&](auto k, auto stride) {
#pragma omp parallel for schedule(static)
      for (int64_t pl = 0; pl < d.planes; ++pl) {
        for (int64_t p = 0; p < d.p; ++p) {
          const T* top = xs + (pl * d.h + p * stride) * d.w;
          T* out = ys + (pl * d.p + p) * d.q;
#pragma omp simd
          for (int64_t q = 0; q < d.q; ++q) {
            float best;
            window_maximum(top, d.w, k, stride, q, best);
            store(out, q, best);
          }
        }
      }
    });
  });
}

void max_pool_backward(const Tensor& x, const Tensor& dy, Pool2dGeometry g, const Tensor& dx,
                       GradMode dx_mode) {
  const PoolDims d = dims_of(x, g);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    const T* xs = x.as<T>();
    const T* gy = dy.as<T>();
    if (!tiled(d)) {
      gather_gradients<T>(d, dx, dx_mode, [&](int64_t pl, int64_t p, int64_t q, int64_t element) {
        const bool chosen = argmax_in_window(d, xs + pl * d.h * d.w, p, q) == element;
        return chosen ? load(gy, (pl * d.p + p) * d.q + q) : 0.0f;
      });
      return;
    }
    // Each window's maximum found once, for a run of windows at a time; its gradient goes to
    // that element, zeros to the rest.
    constexpr int64_t kWindowRun = 64;
    with_window_size(d, [&](auto k, auto stride) {
      spread_windows<T>(d, dx, dx_mode, [&](int64_t pl, int64_t p, T* rows, auto put) {
        const T* top = xs + (pl * d.h + p * k) * d.w;
        const T* g_row = gy + (pl * d.p + p) * d.q;
        int32_t pick[kWindowRun];
        float grad[kWindowRun];
        for (int64_t q0 = 0; q0 < d.q; q0 += kWindowRun) {
          const int64_t count = std::min(kWindowRun, d.q - q0);
#pragma omp simd
          for (int64_t q = 0; q < count; ++q) {
            float best;
            pick[q] = window_maximum(top, d.w, k, stride, q0 + q, best);
            grad[q] = load(g_row, q0 + q);
          }
          for (int64_t i = 0; i < k; ++i) {
            T* row = rows + i * d.w + q0 * k;
#pragma omp simd
            for (int64_t q = 0; q < count; ++q)
              for (int64_t j = 0; j < k; ++j)
                put(row, q * k + j, pick[q] == i * k + j ? grad[q] : 0.0f);
          }
        }
      });
    });
  });
}

}  // namespace psgd::cpu
