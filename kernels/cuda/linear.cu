// Linear layers on CUDA: the matrix products through cuBLAS (row-major tensors read as their
// column-major transposes), the bias and its gradient as small kernels. With bf16 activations the
// products take bf16 operands and compute in float32 (cublasGemmEx); w is rounded into a bf16
// copy in the workspace, as cuBLAS multiplies operands of one type. cuBLAS's own workspace is the
// context's workspace past that scratch: the one workspace that the convolutions use too serves
// both, as no two ops overlap in stream order (a separate one held 32 MiB more at the peak).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/workspace.h"

namespace psgd::cuda {
namespace {

int as_int(int64_t v) {
  PSGD_CHECK(v <= INT32_MAX, "linear: dimension ", v, " is too large for cuBLAS");
  return static_cast<int>(v);
}

cudaDataType cublas_type(DType dtype) {
  return dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

// The op's regions of the workspace. With bf16 activations: w rounded to bf16, then the
// forward's float32 product (N, out), to which the bias is added before y is rounded once, as on
// the CPU. Then cuBLAS's own workspace: all that follows, at least 4 MiB (NVIDIA's recommendation
// before Hopper, 32 MiB there), which in a convolutional network the convolutions' larger share
// provides.
constexpr size_t kCublasWorkspaceBytes = size_t{4} << 20;

struct ScratchLayout {
  size_t product = 0;  // byte offset of the bf16 path's product; w's copy starts at 0
  size_t cublas = 0;   // byte offset of cuBLAS's workspace
  int64_t floats = 0;
};

ScratchLayout scratch_layout(const Shape& x, const Shape& w, DType activations) {
  WorkspaceLayout layout;
  ScratchLayout s;
  if (activations == DType::BF16) {
    layout.add(w, DType::BF16);
    s.product = layout.add(Shape{x[0], w[0]}, DType::F32);
  }
  s.cublas = layout.add(kCublasWorkspaceBytes);
  s.floats = layout.floats();
  return s;
}

// c (m, n) = op(a) (m, k) op(b) (k, n) + beta c, column-major with leading dimensions lda, ldb
// and ldc, cuBLAS working in the workspace from `s.cublas` on. Float32 operands go through
// cublasSgemm, which follows the handle's TF32 setting; bf16 a and b (c float32 or bf16) through
// cublasGemmEx, computing in float32 and rounding c once.
void gemm(Context& ctx, const ScratchLayout& s, cublasOperation_t op_a, cublasOperation_t op_b,
          int m, int n, int k, const Tensor& a, int lda, const Tensor& b, int ldb, float beta,
          const Tensor& c, int ldc) {
  const Tensor workspace = ctx.workspace(ctx.reserved_workspace_floats());
  const size_t bytes = static_cast<size_t>(workspace.numel()) * sizeof(float);
  PSGD_CHECK(bytes >= s.cublas + kCublasWorkspaceBytes, "linear: the workspace was not planned");
  CUBLAS_CHECK(cublasSetWorkspace(ctx.cublas(), static_cast<std::byte*>(workspace.data) + s.cublas,
                                  bytes - s.cublas));
  const float one = 1.0f;
  if (a.dtype == DType::F32) {
    CUBLAS_CHECK(cublasSgemm(ctx.cublas(), op_a, op_b, m, n, k, &one, a.f32(), lda, b.f32(), ldb,
                             &beta, c.f32(), ldc));
    return;
  }
  CUBLAS_CHECK(cublasGemmEx(ctx.cublas(), op_a, op_b, m, n, k, &one, a.data, CUDA_R_16BF, lda,
                            b.data, CUDA_R_16BF, ldb, &beta, c.data, cublas_type(c.dtype), ldc,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

struct Bf16Scratch {
  Tensor weight;   // (out, in) bf16: w rounded
  Tensor product;  // (N, out) float32
};

// The scratch for bf16 activations, w already rounded into it (a kernel on the stream).
Bf16Scratch stage_bf16(const Context& ctx, const ScratchLayout& s, const Shape& x,
                       const Tensor& w) {
  const Tensor ws = ctx.workspace(s.floats);
  const Bf16Scratch staged{workspace_region(ws, 0, w.shape, DType::BF16),
                           workspace_region(ws, s.product, Shape{x[0], w.shape[0]}, DType::F32)};
  cast(w, staged.weight);
  return staged;
}

// db (out) = the column sums of dy (N, out), each summed by one thread in row order
// (deterministic).
template <class T>
void bias_gradient(const Tensor& dy, const Tensor& db) {
  const int64_t n = dy.shape[0], out = dy.shape[1];
  const T* g = dy.as<T>();
  float* bias_grad = db.f32();
  for_each(out, [=] __device__(int64_t o) {
    double s = 0.0;
    for (int64_t r = 0; r < n; ++r) s += load(g, r * out + o);
    bias_grad[o] = static_cast<float>(s);
  });
}

}  // namespace

int64_t linear_workspace_floats(const Context& ctx, const Shape& x, const Shape& w) {
  return scratch_layout(x, w, ctx.activation_dtype()).floats;
}

// Column-major, y^T (out, N) = w (out, in), read as the transpose of w^T (in, out), times
// x^T (in, N).
void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y) {
  const int n = as_int(x.shape[0]), in = as_int(x.shape[1]), out = as_int(w.shape[0]);
  const float* bias = b.f32();
  const ScratchLayout s = scratch_layout(x.shape, w.shape, x.dtype);
  if (x.dtype == DType::F32) {  // y starts as the bias in every row, then y += x w^T
    float* yp = y.f32();
    for_each(y.numel(), [=] __device__(int64_t i) { yp[i] = bias[i % out]; });
    gemm(ctx, s, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, w, in, x, in, 1.0f, y, out);
    return;
  }
  const Bf16Scratch staged = stage_bf16(ctx, s, x.shape, w);
  gemm(ctx, s, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, staged.weight, in, x, in, 0.0f, staged.product,
       out);
  const float* product = staged.product.f32();
  bf16* yp = y.bf16s();
  for_each(y.numel(), [=] __device__(int64_t i) { yp[i] = to_bf16(product[i] + bias[i % out]); });
}

void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, GradMode dx_mode, const Tensor& dw, const Tensor& db) {
  const int n = as_int(x.shape[0]), in = as_int(x.shape[1]), out = as_int(w.shape[0]);
  const ScratchLayout s = scratch_layout(x.shape, w.shape, x.dtype);
  // dw (out, in) = dy^T x: column-major, dw^T (in, out) = x^T (in, N) dy (N, out).
  gemm(ctx, s, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, x, in, dy, out, 0.0f, dw, in);
  with_activation_type(dy.dtype, [&](auto t) { bias_gradient<decltype(t)>(dy, db); });
  if (!dx.defined()) return;
  // dx (N, in) = dy w: column-major, dx^T (in, N) = w^T (in, out) dy^T (out, N).
  const Tensor weight = x.dtype == DType::F32 ? w : stage_bf16(ctx, s, x.shape, w).weight;
  const float beta = dx_mode == GradMode::Accumulate ? 1.0f : 0.0f;
  gemm(ctx, s, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, weight, in, dy, out, beta, dx, in);
}

}  // namespace psgd::cuda
