// Fully connected layer on the CPU through OpenBLAS.
#include <cblas.h>

#include "kernels/cpu/cpu_ops.h"

namespace psgd::cpu {

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y) {
  const int64_t n = x.shape[0], in = w.shape[1], out = w.shape[0];
  float* yp = y.f32();
  const float* bias = b.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) yp[i * out + o] = bias[o];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x.f32(), in, w.f32(), in,
              1.0f, yp, out);
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx,
                     GradMode dx_mode, const Tensor& dw, const Tensor& db) {
  const int64_t n = x.shape[0], in = w.shape[1], out = w.shape[0];
  const float* g = dy.f32();
  // dw (out, in) = dy^T (out, N) . x (N, in)
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, g, out, x.f32(), in,
              0.0f, dw.f32(), in);
  float* gb = db.f32();
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < out; ++o) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += g[i * out + o];
    gb[o] = static_cast<float>(sum);
  }
  if (!dx.defined()) return;
  // dx (N, in) = dy (N, out) . w (out, in)
  const float beta = dx_mode == GradMode::Accumulate ? 1.0f : 0.0f;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, g, out, w.f32(), in,
              beta, dx.f32(), in);
}

}  // namespace psgd::cpu
