// Batches of a host BatchSource copied to another device (the GPU) before the step: one
// preallocated device buffer each for images and labels, grown only for a larger batch.
#pragma once

#include "engine/batch_source.h"
#include "engine/memory.h"

namespace psgd {

class DeviceBatches final : public BatchSource {
 public:
  DeviceBatches(BatchSource& host, Device device) : host_(host), device_(device) {}

  void start_epoch(int64_t epoch) override { host_.start_epoch(epoch); }
  bool next(Tensor& images, Tensor& labels) override;
  int64_t batches_per_epoch() const override { return host_.batches_per_epoch(); }
  int64_t samples() const override { return host_.samples(); }

 private:
  BatchSource& host_;
  Device device_;
  DeviceBuffer images_, labels_;
};

}  // namespace psgd
