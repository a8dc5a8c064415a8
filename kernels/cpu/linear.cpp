// Fully connected layer on the CPU through OpenBLAS (bf16 activations staged as float32).
#include <cblas.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/staging.h"

namespace psgd::cpu {
namespace {

void forward_f32(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y) {
  const int64_t n = x.shape[0], in = w.shape[1], out = w.shape[0];
  float* yp = y.f32();
  const float* bias = b.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) yp[i * out + o] = bias[o];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x.f32(), in, w.f32(), in,
              1.0f, yp, out);
}

void backward_f32(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx,
                  GradMode dx_mode, const Tensor& dw, const Tensor& db) {
  const int64_t n = x.shape[0], in = w.shape[1], out = w.shape[0];
  const float* g = dy.f32();
  // dw (out, in) = dy^T (out, N) . x (N, in)
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, g, out, x.f32(), in, 0.0f,
              dw.f32(), in);
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

}  // namespace

int64_t linear_workspace_floats(const Context& ctx, const Shape& x, const Shape& w) {
  if (ctx.activation_dtype() == DType::F32) return 0;
  return staging_floats({w, x, Shape{x[0], w[0]}, x});  // backward stages w, x, dy and dx
}

void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y) {
  Staging staging(ctx, 0);
  const Tensor y32 = staging.output_for(y);
  forward_f32(staging.widened(x), staging.weights(w), b, y32);
  unstage(y32, y);
}

void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, GradMode dx_mode, const Tensor& dw, const Tensor& db) {
  Staging staging(ctx, 0);
  const Tensor dx32 = staging.output_for(dx, dx_mode);
  backward_f32(staging.widened(x), staging.weights(w), staging.widened(dy), dx32, dx_mode, dw, db);
  unstage(dx32, dx);
}

}  // namespace psgd::cpu
