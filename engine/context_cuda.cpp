#include "engine/context_cuda.h"

#include <cublas_v2.h>
#include <cuda_profiler_api.h>
#include <cudnn.h>

#include "engine/captured_graph.h"
#include "engine/cuda_check.h"

namespace psgd {

struct CudaResources {
  cudaStream_t stream = cudaStreamPerThread;
  cublasHandle_t cublas = nullptr;
  cudnnHandle_t cudnn = nullptr;
};

CudaResources* create_cuda_resources(const Numerics& math) {
  auto r = std::make_unique<CudaResources>();
  CUBLAS_CHECK(cublasCreate(&r->cublas));
  CUBLAS_CHECK(cublasSetStream(r->cublas, r->stream));
  // cuBLAS's workspace is part of the context's, set before each product (kernels/cuda/linear.cu).
  // Strict float32 also rules out cuBLAS's reduced-precision reductions. The bf16 mode's products
  // run on tensor cores whatever tf32 says, and must not sum split-K partials in bf16: the CPU
  // rounds each output once.
  const cublasMath_t mode =
      math.bf16   ? static_cast<cublasMath_t>(CUBLAS_TF32_TENSOR_OP_MATH |
                                            CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)
      : math.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                  : CUBLAS_PEDANTIC_MATH;
  CUBLAS_CHECK(cublasSetMathMode(r->cublas, mode));
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
void cuda_profiler_recording(bool on) {
  CUDA_CHECK(on ? cudaProfilerStart() : cudaProfilerStop());
}

// ---- Captured steps -----------------------------------------------------------------------------
struct CapturedGraph::Impl {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~Impl() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
};

CapturedGraph CapturedGraph::capture(const Context& ctx, const std::function<void()>& work) {
  PSGD_CHECK(ctx.device() == Device::CUDA, "only GPU work can be captured");
  auto impl = std::make_shared<Impl>();
  // Thread-local mode: work of other threads (the loader's copies) does not break the capture.
  CUDA_CHECK(cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal));
  try {
    work();
  } catch (...) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(ctx.stream(), &partial);
    if (partial) cudaGraphDestroy(partial);
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(ctx.stream(), &impl->graph));
  CUDA_CHECK(cudaGraphInstantiate(&impl->exec, impl->graph, 0));
  CapturedGraph out;
  out.impl_ = std::move(impl);
  return out;
}

void CapturedGraph::replay(const Context& ctx) const {
  PSGD_CHECK(impl_, "replay of an empty graph");
  CUDA_CHECK(cudaGraphLaunch(impl_->exec, ctx.stream()));
}

}  // namespace psgd
