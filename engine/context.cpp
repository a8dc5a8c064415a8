#include "engine/context.h"

#include <cblas.h>
#include <omp.h>

#include "engine/context_cuda.h"

namespace psgd {

Context::Context(Device device, int threads, uint64_t seed, Numerics math)
    : device_(device),
      threads_(threads > 0 ? threads : omp_get_num_procs()),
      seed_(seed),
      math_(math),
      cuda_(nullptr, &destroy_cuda_resources) {
  PSGD_CHECK(device == Device::CPU || cuda_available(),
             "CUDA device requested but none is available");
  omp_set_num_threads(threads_);
  openblas_set_num_threads(threads_);
  if (device == Device::CUDA) cuda_.reset(create_cuda_resources(math));
}

Context::~Context() = default;

CUstream_st* Context::stream() const {
  return cuda_ ? cuda_stream(*cuda_) : nullptr;
}
cublasContext* Context::cublas() const {
  return cuda_ ? cuda_cublas(*cuda_) : nullptr;
}
cudnnContext* Context::cudnn() const {
  return cuda_ ? cuda_cudnn(*cuda_) : nullptr;
}

void Context::synchronize() const {
  if (cuda_) cuda_synchronize(*cuda_);
}

void Context::profiler_recording(bool on) const {
  if (!cuda_) return;
  cuda_synchronize(*cuda_);
  cuda_profiler_recording(on);
}

void Context::reserve_workspace(int64_t floats) {
  if (floats <= workspace_floats_) return;
  workspace_ = DeviceBuffer(device_, static_cast<size_t>(floats) * sizeof(float));
  workspace_floats_ = floats;
  ++workspace_generation_;
}

Tensor Context::workspace(int64_t floats) const {
  PSGD_CHECK(floats <= workspace_floats_, "an op needs ", floats, " workspace floats but only ",
             workspace_floats_, " were planned");
  return workspace_.f32(0, Shape{floats});
}

const char* numerics_name(const Context& ctx) {
  if (ctx.math().bf16) return "bf16";
  return ctx.device() == Device::CUDA && ctx.math().tf32 ? "tf32" : "fp32";
}

}  // namespace psgd
