#include "engine/context.h"

#include <cblas.h>
#include <omp.h>

namespace psgd {

Context::Context(Device device, int threads, uint64_t seed)
    : device_(device), threads_(threads > 0 ? threads : omp_get_num_procs()), seed_(seed) {
  PSGD_CHECK(device == Device::CPU || cuda_available(),
             "CUDA device requested but none is available");
  omp_set_num_threads(threads_);
  openblas_set_num_threads(threads_);
}

void Context::reserve_workspace(int64_t floats) {
  if (floats <= workspace_floats_) return;
  workspace_ = DeviceBuffer(device_, static_cast<size_t>(floats) * sizeof(float));
  workspace_floats_ = floats;
}

Tensor Context::workspace(int64_t floats) const {
  PSGD_CHECK(floats <= workspace_floats_, "an op needs ", floats,
             " workspace floats but only ", workspace_floats_, " were planned");
  return workspace_.f32(0, Shape{floats});
}

}  // namespace psgd
