// Host-side tensors for tests: owning storage plus a Tensor view, and seeded random fills.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/memory.h"

namespace psgd::test {

class HostTensor {
 public:
  explicit HostTensor(Shape shape, float value = 0.0f)
      : storage_(static_cast<size_t>(shape.numel()), value),
        view_(storage_.data(), shape, Device::CPU) {}
  HostTensor(const HostTensor&) = delete;
  HostTensor& operator=(const HostTensor&) = delete;

  const Tensor& t() const { return view_; }
  float* data() { return storage_.data(); }
  float& operator[](int64_t i) { return storage_[static_cast<size_t>(i)]; }
  float operator[](int64_t i) const { return storage_[static_cast<size_t>(i)]; }
  int64_t numel() const { return view_.numel(); }

 private:
  std::vector<float> storage_;
  Tensor view_;
};

// Uniform in [lo, hi), reproducible from (seed, stream).
void fill_uniform(const Tensor& t, float lo, float hi, uint64_t seed, uint64_t stream);
// Uniform magnitudes in [margin, 1] with random signs: keeps values away from ReLU's kink.
void fill_away_from_zero(const Tensor& t, float margin, uint64_t seed, uint64_t stream);
// A random permutation of evenly spaced values: distinct, so max pooling has no near-ties.
void fill_distinct(const Tensor& t, float spacing, uint64_t seed, uint64_t stream);

}  // namespace psgd::test
