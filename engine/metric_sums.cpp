#include "engine/metric_sums.h"

namespace psgd {

MetricSums::MetricSums(Device device)
    : buffer_(device, ops::kMetricFields * sizeof(double)),
      sums_(buffer_.f64(0, Shape{ops::kMetricFields})) {
  reset();
}

std::array<double, ops::kMetricFields> MetricSums::read() const {
  std::array<double, ops::kMetricFields> out{};
  memory_copy(out.data(), Device::CPU, buffer_.data(), buffer_.device(), sizeof out);
  return out;
}

void MetricSums::reset() {
  memory_zero(buffer_.data(), buffer_.device(), buffer_.bytes());
}

}  // namespace psgd
