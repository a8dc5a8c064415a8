// The loss, top-1 and top-5 counts and samples of many batches, summed on the device
// (ops::accumulate_metrics) so that nothing waits for the device between batches, and read
// back with one copy.
#pragma once

#include <array>

#include "engine/memory.h"
#include "kernels/ops.h"

namespace psgd {

class MetricSums {
 public:
  explicit MetricSums(Device device);
  MetricSums(const MetricSums&) = delete;
  MetricSums& operator=(const MetricSums&) = delete;

  // (kMetricFields) float64 on the device, for accumulate_metrics. Its memory never moves (a
  // captured step holds its address).
  const Tensor& sums() const { return sums_; }
  // Waits for the device.
  std::array<double, ops::kMetricFields> read() const;
  void reset();

 private:
  DeviceBuffer buffer_;
  Tensor sums_;
};

}  // namespace psgd
