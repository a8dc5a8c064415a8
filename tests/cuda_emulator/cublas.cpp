// The part of cuBLAS psgd calls, for the emulated GPU: handles, and the two matrix products
// written from cuBLAS's documented contract (column-major operands, op(A) m x k, op(B) k x n,
// C = alpha op(A) op(B) + beta C, C not read when beta is 0). Operands outside device memory or
// leading dimensions too small for their matrices fail as invalid values, as do unknown
// operations and operands inside the workspace. A product first fills the workspace with NaNs,
// as real cuBLAS may leave anything there, so that data an op keeps in it does not survive. In the
// TF32 math mode float operands are rounded to TF32 (10 mantissa bits) first, as the tensor cores
// read them; bf16 operands are widened exactly; sums are float32.
#include <cublas_v2.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/bfloat16.h"
#include "tests/cuda_emulator/device_memory.h"
#include "tests/cuda_emulator/stream.h"
#include "tests/cuda_emulator/tf32.h"

struct cublasContext {
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  std::byte* workspace = nullptr;
  size_t workspace_bytes = 0;
};

namespace {

using psgd::emu::is_device_range;
using psgd::emu::to_tf32;

// A column-major operand: element (row, col) at data[row + col * ld], read through its op.
struct Operand {
  const void* data;
  cudaDataType type;
  int ld;
  bool transposed;
  bool tf32;
  float at(int row, int col) const {  // of op(X)
    const int64_t i =
        transposed ? col + static_cast<int64_t>(row) * ld : row + static_cast<int64_t>(col) * ld;
    if (type == CUDA_R_16BF) return psgd::to_float(static_cast<const psgd::bf16*>(data)[i]);
    const float v = static_cast<const float*>(data)[i];
    return tf32 ? to_tf32(v) : v;
  }
};

size_t element_bytes(cudaDataType t) {
  return t == CUDA_R_16BF ? 2 : 4;
}

// Whether a stored rows x cols matrix with leading dimension ld is valid, in device memory and
// clear of the handle's workspace.
bool valid_matrix(cublasHandle_t handle, const void* p, cudaDataType t, int rows, int cols,
                  int ld) {
  if (ld < std::max(1, rows)) return false;
  if (rows == 0 || cols == 0) return true;
  const size_t bytes = (static_cast<size_t>(ld) * (cols - 1) + rows) * element_bytes(t);
  const auto* first = static_cast<const std::byte*>(p);
  const bool in_workspace =
      first < handle->workspace + handle->workspace_bytes && handle->workspace < first + bytes;
  return is_device_range(p, bytes) && !in_workspace;
}

cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, float alpha, const void* a, cudaDataType at, int lda, const void* b,
                    cudaDataType bt, int ldb, float beta, void* c, cudaDataType ct, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const auto known = [](cublasOperation_t op) {
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
  };
  if (m < 0 || n < 0 || k < 0 || !known(ta) || !known(tb)) return CUBLAS_STATUS_INVALID_VALUE;
  // For real operands the conjugate transpose is the transpose.
  const bool a_t = ta != CUBLAS_OP_N, b_t = tb != CUBLAS_OP_N;
  if (!valid_matrix(handle, a, at, a_t ? k : m, a_t ? m : k, lda) ||
      !valid_matrix(handle, b, bt, b_t ? n : k, b_t ? k : n, ldb) ||
      !valid_matrix(handle, c, ct, m, n, ldc))
    return CUBLAS_STATUS_INVALID_VALUE;
  // The mode is a value in the low bits, with flags such as DISALLOW_REDUCED_PRECISION above.
  const bool tf32 = (handle->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH;
  const Operand A{a, at, lda, a_t, tf32 && at == CUDA_R_32F};
  const Operand B{b, bt, ldb, b_t, tf32 && bt == CUDA_R_32F};
  std::byte* const workspace = handle->workspace;
  const size_t workspace_bytes = handle->workspace_bytes;
  psgd::emu::issue([=] {
    if (workspace_bytes > 0) std::memset(workspace, 0xff, workspace_bytes);
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        float sum = 0.0f;
        for (int p = 0; p < k; ++p) sum += A.at(i, p) * B.at(p, j);
        const int64_t ci = i + static_cast<int64_t>(j) * ldc;
        float result = alpha * sum;
        if (ct == CUDA_R_16BF) {
          auto* out = static_cast<psgd::bf16*>(c) + ci;
          if (beta != 0.0f) result += beta * psgd::to_float(*out);
          *out = psgd::to_bf16(result);
        } else {
          float* out = static_cast<float*>(c) + ci;
          if (beta != 0.0f) result += beta * *out;
          *out = result;
        }
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

// As cuBLAS's, setting the stream drops the workspace given (back to its own pool, which the
// emulator does not have).
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->workspace = nullptr;
  handle->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  // cuBLAS wants the workspace on a 256-byte boundary.
  if (bytes != 0 &&
      (!is_device_range(workspace, bytes) || reinterpret_cast<uintptr_t>(workspace) % 256 != 0))
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = bytes == 0 ? nullptr : static_cast<std::byte*>(workspace);
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid value was used as an argument";
    default:
      return "an error (emulated cuBLAS)";
  }
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                              int m, int n, int k, const float* alpha, const float* a, int lda,
                              const float* b, int ldb, const float* beta, float* c, int ldc) {
  return gemm(handle, ta, tb, m, n, k, *alpha, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb, *beta, c,
              CUDA_R_32F, ldc);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                            int m, int n, int k, const void* alpha, const void* a, cudaDataType at,
                            int lda, const void* b, cudaDataType bt, int ldb, const void* beta,
                            void* c, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
  // With float32 compute: bf16 operands into bf16 or float32, or float32 into float32.
  const bool supported =
      at == bt && ((at == CUDA_R_16BF && (ct == CUDA_R_16BF || ct == CUDA_R_32F)) ||
                   (at == CUDA_R_32F && ct == CUDA_R_32F));
  if (compute != CUBLAS_COMPUTE_32F || !supported) return CUBLAS_STATUS_NOT_SUPPORTED;
  return gemm(handle, ta, tb, m, n, k, *static_cast<const float*>(alpha), a, at, lda, b, bt, ldb,
              *static_cast<const float*>(beta), c, ct, ldc);
}
