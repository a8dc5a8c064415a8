// The CUDA side of a Context: its stream and library handles (context_cuda.cpp). A CPU-only
// build cannot make a CUDA context (it needs a GPU), so there context_cpu_only.cpp refuses
// create_cuda_resources with an error and the accessors return null.
#pragma once

#include "engine/context.h"

namespace psgd {

CudaResources* create_cuda_resources(const Numerics& math);
void destroy_cuda_resources(CudaResources* resources);
CUstream_st* cuda_stream(const CudaResources& r);
cublasContext* cuda_cublas(const CudaResources& r);
cudnnContext* cuda_cudnn(const CudaResources& r);
void cuda_synchronize(const CudaResources& r);
void cuda_profiler_recording(bool on);

}  // namespace psgd
