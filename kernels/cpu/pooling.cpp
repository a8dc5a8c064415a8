// Average and max pooling on the CPU (no padding, floor output size). One thread per (n, c)
// plane, so the scatter of the backward passes never races.
#include <cmath>
#include <cstring>

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

// Row-major index within the input plane of the first maximum of window (p, q).
int64_t argmax_in_window(const PoolDims& d, const float* plane, int64_t p, int64_t q) {
  int64_t best = p * d.stride * d.w + q * d.stride;
  for (int64_t i = 0; i < d.k; ++i) {
    for (int64_t j = 0; j < d.k; ++j) {
      const int64_t idx = (p * d.stride + i) * d.w + q * d.stride + j;
      if (plane[idx] > plane[best] || std::isnan(plane[idx])) best = idx;
      if (std::isnan(plane[best])) return best;
    }
  }
  return best;
}

void clear_if_overwrite(float* plane, int64_t count, GradMode mode) {
  if (mode == GradMode::Overwrite) std::memset(plane, 0, sizeof(float) * count);
}

}  // namespace

void avg_pool_forward(const Tensor& x, Pool2dGeometry g, const Tensor& y) {
  const PoolDims d = dims_of(x, g);
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const float* in = x.f32() + pl * d.h * d.w;
    float* out = y.f32() + pl * d.p * d.q;
    for (int64_t p = 0; p < d.p; ++p) {
      for (int64_t q = 0; q < d.q; ++q) {
        float sum = 0.0f;
        for (int64_t i = 0; i < d.k; ++i)
          for (int64_t j = 0; j < d.k; ++j) sum += in[(p * d.stride + i) * d.w + q * d.stride + j];
        out[p * d.q + q] = sum * inv;
      }
    }
  }
}

void avg_pool_backward(const Tensor& dy, Pool2dGeometry g, const Tensor& dx, GradMode dx_mode) {
  const PoolDims d = dims_of(dx, g);
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const float* gy = dy.f32() + pl * d.p * d.q;
    float* gx = dx.f32() + pl * d.h * d.w;
    clear_if_overwrite(gx, d.h * d.w, dx_mode);
    for (int64_t p = 0; p < d.p; ++p) {
      for (int64_t q = 0; q < d.q; ++q) {
        const float share = gy[p * d.q + q] * inv;
        for (int64_t i = 0; i < d.k; ++i)
          for (int64_t j = 0; j < d.k; ++j) gx[(p * d.stride + i) * d.w + q * d.stride + j] += share;
      }
    }
  }
}

void max_pool_forward(const Tensor& x, Pool2dGeometry g, const Tensor& y) {
  const PoolDims d = dims_of(x, g);
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const float* in = x.f32() + pl * d.h * d.w;
    float* out = y.f32() + pl * d.p * d.q;
    for (int64_t p = 0; p < d.p; ++p)
      for (int64_t q = 0; q < d.q; ++q) out[p * d.q + q] = in[argmax_in_window(d, in, p, q)];
  }
}

void max_pool_backward(const Tensor& x, const Tensor& dy, Pool2dGeometry g, const Tensor& dx,
                       GradMode dx_mode) {
  const PoolDims d = dims_of(x, g);
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < d.planes; ++pl) {
    const float* in = x.f32() + pl * d.h * d.w;
    const float* gy = dy.f32() + pl * d.p * d.q;
    float* gx = dx.f32() + pl * d.h * d.w;
    clear_if_overwrite(gx, d.h * d.w, dx_mode);
    for (int64_t p = 0; p < d.p; ++p)
      for (int64_t q = 0; q < d.q; ++q) gx[argmax_in_window(d, in, p, q)] += gy[p * d.q + q];
  }
}

}  // namespace psgd::cpu
