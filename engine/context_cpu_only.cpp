// CPU-only builds: a Context never holds CUDA resources (making one on CUDA already failed
// because no GPU is available), so these are never called with a real object.
#include "engine/captured_graph.h"
#include "engine/context_cuda.h"

namespace psgd {

CudaResources* create_cuda_resources(const Numerics&) {
  PSGD_FAIL("this build has no CUDA backend");
}
void destroy_cuda_resources(CudaResources*) {}
CUstream_st* cuda_stream(const CudaResources&) {
  return nullptr;
}
cublasContext* cuda_cublas(const CudaResources&) {
  return nullptr;
}
cudnnContext* cuda_cudnn(const CudaResources&) {
  return nullptr;
}
void cuda_synchronize(const CudaResources&) {}
void cuda_profiler_recording(bool) {}

struct CapturedGraph::Impl {};

CapturedGraph CapturedGraph::capture(const Context&, const std::function<void()>&) {
  PSGD_FAIL("this build has no CUDA backend: nothing to capture");
}

void CapturedGraph::replay(const Context&) const {
  PSGD_FAIL("this build has no CUDA backend");
}

}  // namespace psgd
