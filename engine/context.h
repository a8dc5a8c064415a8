// Context: where ops run and what they share: the device, CPU threads, the base RNG seed and one
// preallocated workspace. (The CUDA backend adds the stream and the cuBLAS/cuDNN handles here.)
#pragma once

#include <cstdint>

#include "engine/memory.h"

namespace psgd {

class Context {
 public:
  // threads = 0 uses every core the process may run on.
  explicit Context(Device device = Device::CPU, int threads = 0, uint64_t seed = 0);

  Device device() const { return device_; }
  int threads() const { return threads_; }
  uint64_t seed() const { return seed_; }

  // The workspace only grows here, at planning time, never inside a step.
  void reserve_workspace(int64_t floats);
  // A float view of the first `floats` workspace elements; more than was reserved is a bug.
  Tensor workspace(int64_t floats) const;

 private:
  Device device_;
  int threads_;
  uint64_t seed_;
  DeviceBuffer workspace_;
  int64_t workspace_floats_ = 0;
};

}  // namespace psgd
