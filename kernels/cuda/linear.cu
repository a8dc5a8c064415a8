// Linear layers on CUDA: the matrix products through cuBLAS (row-major tensors read as their
// column-major transposes), the bias and its gradient as small kernels.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace psgd::cuda {
namespace {

int as_int(int64_t v) {
  PSGD_CHECK(v <= INT32_MAX, "linear: dimension ", v, " is too large for cuBLAS");
  return static_cast<int>(v);
}

}  // namespace

void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y) {
  const int n = as_int(x.shape[0]), in = as_int(x.shape[1]), out = as_int(w.shape[0]);
  // y (N, out) starts as the bias in every row, then y += x w^T: column-major,
  // y^T (out, N) = w (out, in), read as the transpose of w^T (in, out), times x^T (in, N).
  const float* bias = b.f32();
  float* yp = y.f32();
  for_each(y.numel(), [=] __device__(int64_t i) { yp[i] = bias[i % out]; });
  const float one = 1.0f;
  CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w.f32(), in,
                           x.f32(), in, &one, yp, out));
}

void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, GradMode dx_mode, const Tensor& dw, const Tensor& db) {
  const int n = as_int(x.shape[0]), in = as_int(x.shape[1]), out = as_int(w.shape[0]);
  const float one = 1.0f, zero = 0.0f;
  // dw (out, in) = dy^T x: column-major, dw^T (in, out) = x^T (in, N) dy (N, out).
  CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, x.f32(), in,
                           dy.f32(), out, &zero, dw.f32(), in));
  // db = the column sums of dy, each summed by one thread in row order (deterministic).
  const float* g = dy.f32();
  float* bias_grad = db.f32();
  for_each(out, [=] __device__(int64_t o) {
    double s = 0.0;
    for (int64_t r = 0; r < n; ++r) s += g[r * out + o];
    bias_grad[o] = static_cast<float>(s);
  });
  if (!dx.defined()) return;
  // dx (N, in) = dy w: column-major, dx^T (in, N) = w^T (in, out) dy^T (out, N).
  const float beta = dx_mode == GradMode::Accumulate ? 1.0f : 0.0f;
  CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, w.f32(), in,
                           dy.f32(), out, &beta, dx.f32(), in));
}

}  // namespace psgd::cuda
