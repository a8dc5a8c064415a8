// The CUDA side of a Context: its stream and library handles. Built with the CUDA backend; in
// CPU-only builds create_cuda_resources is never reached (a CUDA context needs a GPU) and the
// accessors are stubs.
#pragma once

#include "engine/context.h"

namespace psgd {

CudaResources* create_cuda_resources(const GpuMath& math);
void destroy_cuda_resources(CudaResources* resources);
CUstream_st* cuda_stream(const CudaResources& r);
cublasContext* cuda_cublas(const CudaResources& r);
cudnnContext* cuda_cudnn(const CudaResources& r);
void cuda_synchronize(const CudaResources& r);

}  // namespace psgd
