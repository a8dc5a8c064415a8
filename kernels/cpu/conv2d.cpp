// Convolution on the CPU as one GEMM over the whole batch: im2col lays out the receptive fields
// of all N images as columns (C*R*S, N*P*Q), so a single sgemm with the (K, C*R*S) weight
// matrix computes every output; a permutation then turns (K, N, P*Q) into NCHW.
#include <cblas.h>

#include <cstring>

#include "kernels/cpu/cpu_ops.h"

namespace psgd::cpu {
namespace {

struct ConvDims {
  int64_t n, c, h, w;  // input
  int64_t k, r, s;     // filters
  int64_t p, q;        // output
  int64_t stride, pad;

  int64_t crs() const { return c * r * s; }
  int64_t pq() const { return p * q; }
  int64_t npq() const { return n * p * q; }
};

ConvDims dims_of(const Tensor& x, const Tensor& w, Conv2dGeometry g) {
  const Shape y = ops::conv2d_output_shape(x.shape, w.shape, g);
  return {x.n(), x.c(), x.h(), x.w(), w.n(), w.h(), w.w(), y[2], y[3], g.stride, g.pad};
}

// x (N, C, H, W) -> cols (C*R*S, N*P*Q); out-of-image taps are zero.
void im2col(const ConvDims& d, const float* x, float* cols) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t row = 0; row < d.crs(); ++row) {
    for (int64_t n = 0; n < d.n; ++n) {
      const int64_t c = row / (d.r * d.s), r = row / d.s % d.r, s = row % d.s;
      const float* plane = x + (n * d.c + c) * d.h * d.w;
      float* out = cols + row * d.npq() + n * d.pq();
      for (int64_t p = 0; p < d.p; ++p, out += d.q) {
        const int64_t ih = p * d.stride - d.pad + r;
        if (ih < 0 || ih >= d.h) {
          std::memset(out, 0, sizeof(float) * d.q);
          continue;
        }
        const float* in_row = plane + ih * d.w;
        for (int64_t q = 0; q < d.q; ++q) {
          const int64_t iw = q * d.stride - d.pad + s;
          out[q] = (iw >= 0 && iw < d.w) ? in_row[iw] : 0.0f;
        }
      }
    }
  }
}

// The adjoint of im2col: scatters cols (C*R*S, N*P*Q) back into dx (N, C, H, W). Each thread
// owns whole (n, c) planes, so no two threads write the same element.
void col2im(const ConvDims& d, const float* cols, float* dx, GradMode mode) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < d.n; ++n) {
    for (int64_t c = 0; c < d.c; ++c) {
      float* plane = dx + (n * d.c + c) * d.h * d.w;
      if (mode == GradMode::Overwrite) std::memset(plane, 0, sizeof(float) * d.h * d.w);
      for (int64_t r = 0; r < d.r; ++r) {
        for (int64_t s = 0; s < d.s; ++s) {
          const float* in = cols + ((c * d.r + r) * d.s + s) * d.npq() + n * d.pq();
          for (int64_t p = 0; p < d.p; ++p, in += d.q) {
            const int64_t ih = p * d.stride - d.pad + r;
            if (ih < 0 || ih >= d.h) continue;
            float* out_row = plane + ih * d.w;
            for (int64_t q = 0; q < d.q; ++q) {
              const int64_t iw = q * d.stride - d.pad + s;
              if (iw >= 0 && iw < d.w) out_row[iw] += in[q];
            }
          }
        }
      }
    }
  }
}

// (K, N, PQ) <-> (N, K, PQ): `to_nchw` selects the direction.
void permute_kn(const ConvDims& d, const float* src, float* dst, bool to_nchw) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < d.n; ++n) {
    for (int64_t k = 0; k < d.k; ++k) {
      const int64_t nchw = (n * d.k + k) * d.pq(), knpq = k * d.npq() + n * d.pq();
      if (to_nchw)
        std::memcpy(dst + nchw, src + knpq, sizeof(float) * d.pq());
      else
        std::memcpy(dst + knpq, src + nchw, sizeof(float) * d.pq());
    }
  }
}

}  // namespace

void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, Conv2dGeometry g,
                    const Tensor& y) {
  const ConvDims d = dims_of(x, w, g);
  const Tensor ws = ctx.workspace(ops::conv2d_workspace_floats(x.shape, w.shape, g));
  float* cols = ws.f32();
  float* ykn = cols + d.crs() * d.npq();  // (K, N*P*Q)
  im2col(d, x.f32(), cols);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.k, d.npq(), d.crs(), 1.0f, w.f32(),
              d.crs(), cols, d.npq(), 0.0f, ykn, d.npq());
  permute_kn(d, ykn, y.f32(), /*to_nchw=*/true);
}

void conv2d_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw) {
  const ConvDims d = dims_of(x, w, g);
  const Tensor ws = ctx.workspace(ops::conv2d_workspace_floats(x.shape, w.shape, g));
  float* cols = ws.f32();
  float* dykn = cols + d.crs() * d.npq();  // (K, N*P*Q)
  permute_kn(d, dy.f32(), dykn, /*to_nchw=*/false);
  im2col(d, x.f32(), cols);
  // dw (K, CRS) = dy (K, NPQ) . cols^T
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.k, d.crs(), d.npq(), 1.0f, dykn,
              d.npq(), cols, d.npq(), 0.0f, dw.f32(), d.crs());
  if (!dx.defined()) return;
  // dcols (CRS, NPQ) = w^T . dy, written over the columns that are no longer needed.
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.crs(), d.npq(), d.k, 1.0f, w.f32(),
              d.crs(), dykn, d.npq(), 0.0f, cols, d.npq());
  col2im(d, cols, dx.f32(), dx_mode);
}

}  // namespace psgd::cpu
