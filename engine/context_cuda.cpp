#include "engine/context_cuda.h"

#include <cublas_v2.h>
#include <cudnn.h>

#include "engine/cuda_check.h"

namespace psgd {

struct CudaResources {
  cudaStream_t stream = cudaStreamPerThread;
  cublasHandle_t cublas = nullptr;
  cudnnHandle_t cudnn = nullptr;
};

CudaResources* create_cuda_resources(const GpuMath& math) {
  auto r = std::make_unique<CudaResources>();
  CUBLAS_CHECK(cublasCreate(&r->cublas));
  CUBLAS_CHECK(cublasSetStream(r->cublas, r->stream));
  // Strict float32 also rules out cuBLAS's reduced-precision reductions.
  CUBLAS_CHECK(
      cublasSetMathMode(r->cublas, math.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
  CUDNN_CHECK(cudnnCreate(&r->cudnn));
  CUDNN_CHECK(cudnnSetStream(r->cudnn, r->stream));
  return r.release();
}

void destroy_cuda_resources(CudaResources* r) {
  if (!r) return;
  if (r->cudnn) cudnnDestroy(r->cudnn);
  if (r->cublas) cublasDestroy(r->cublas);
  delete r;
}

CUstream_st* cuda_stream(const CudaResources& r) {
  return r.stream;
}
cublasContext* cuda_cublas(const CudaResources& r) {
  return r.cublas;
}
cudnnContext* cuda_cudnn(const CudaResources& r) {
  return r.cudnn;
}
void cuda_synchronize(const CudaResources& r) {
  CUDA_CHECK(cudaStreamSynchronize(r.stream));
}

}  // namespace psgd
