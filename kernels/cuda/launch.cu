// Which launches are programmatic dependents (launch.h).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/launch.h"

namespace psgd::cuda {
namespace {

#ifndef PSGD_CUDA_EMULATION
// Compiled as every psgd kernel is, so its PTX version on a card is theirs.
__global__ void compiled_version_probe() {}
#endif

// Whether the current device takes programmatic dependents: see dependent_launches(). A query
// that fails answers no, and its error is cleared, as it is no launch's.
bool takes_dependents(int device) {
  int major = 0;
  bool answered =
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess;
#ifdef PSGD_CUDA_EMULATION
  const bool driver_and_kernels = true;
#else
  int driver = 0;
  cudaFuncAttributes kernel{};
  answered = answered && cudaDriverGetVersion(&driver) == cudaSuccess &&
             cudaFuncGetAttributes(&kernel, compiled_version_probe) == cudaSuccess;
  const bool driver_and_kernels = driver >= 12030 && kernel.ptxVersion >= 90;
#endif
  if (!answered) (void)cudaGetLastError();
  return answered && major >= 9 && driver_and_kernels;
}

}  // namespace

bool dependent_launches() {
  const char* setting = std::getenv("PSGD_PDL");
  if (setting && std::strcmp(setting, "0") == 0) return false;
  constexpr int kDevices = 64;
  static std::atomic<signed char> dependent[kDevices] = {};  // 0 not yet known, 1 yes, -1 no
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) return false;
  if (dependent[device] == 0) dependent[device] = takes_dependents(device) ? 1 : -1;
  return dependent[device] > 0;
}

}  // namespace psgd::cuda
