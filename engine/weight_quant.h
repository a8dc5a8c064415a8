// Weight quantizers over a ParamStore: the running ranges of PSGD training, Q(w) in place for
// low-precision (LP) evaluation with ranges fresh from the weights, and a snapshot that brings
// the float weights back bit for bit.
#pragma once

#include <vector>

#include "engine/context.h"
#include "engine/params.h"

namespace psgd {

// The range [x_min, x_max] of each quantized tensor, tracked as the reference does during
// training: from min(0, min w) and max(0, max w) of the weights at each step, the first step
// setting it and later ones moving it with momentum 0.1. Not part of the reference's
// checkpoints; ours save it with the optimizer state.
class RunningRanges {
 public:
  explicit RunningRanges(const ParamStore& params);

  // Folds the current weights into the ranges: call once per training step, before the update.
  void update(Context& ctx, const ParamStore& params);
  bool started() const { return started_; }

  const std::vector<int>& ids() const { return ids_; }  // the quantized tensors, in table order
  float x_min(size_t i) const { return x_min_[i]; }
  float x_max(size_t i) const { return x_max_[i]; }
  float delta(size_t i, const ParamStore& params) const;
  // For checkpoints: restore ranges saved earlier.
  void restore(std::vector<float> x_min, std::vector<float> x_max);

 private:
  std::vector<int> ids_;
  std::vector<float> x_min_, x_max_;
  bool started_ = false;
  DeviceBuffer scratch_;  // (2): one tensor's min and max
};

// The range of a tensor fresh from its weights, as LP evaluation takes it: min(0, min w) and
// max(0, max w); returns delta for `bits`.
float fresh_delta(Context& ctx, const Tensor& w, int bits, const Tensor& scratch2);

// Replaces every quantized tensor of the store by Q(w), its range fresh from the weights.
void quantize_in_place(Context& ctx, ParamStore& params);

// Copies the trainable weights on creation and writes them back when destroyed, so that
// evaluation of quantized or pruned weights leaves the float weights untouched.
class WeightsSnapshot {
 public:
  explicit WeightsSnapshot(ParamStore& params);
  ~WeightsSnapshot();
  WeightsSnapshot(const WeightsSnapshot&) = delete;
  WeightsSnapshot& operator=(const WeightsSnapshot&) = delete;

 private:
  ParamStore& params_;
  DeviceBuffer copy_;
};

}  // namespace psgd
