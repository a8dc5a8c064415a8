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
// setting it and later ones moving it with momentum 0.1. Kept on the parameters' device, where
// the optimizer's update reads it. Not part of the reference's checkpoints; ours save it with
// the optimizer state.
class RunningRanges {
 public:
  explicit RunningRanges(const ParamStore& params);

  // Folds the current weights in, one launch for all tensors: call once per training step,
  // before the update. `segments` is the optimizer's table (kernels/ops.h), whose rows name
  // their range.
  void update(Context& ctx, const Tensor& weights, const Tensor& segments);
  bool started() const { return started_; }

  const std::vector<int>& ids() const { return ids_; }  // the quantized tensors, in table order
  // (tensors, 2) = {x_min, x_max} on the device.
  Tensor values() const;
  // Host copies (not inside a step): x_min and x_max of every range, in ids() order.
  std::vector<float> x_min() const;
  std::vector<float> x_max() const;
  // For checkpoints: restore ranges saved earlier.
  void restore(const std::vector<float>& x_min, const std::vector<float>& x_max);

 private:
  std::vector<float> host() const;

  std::vector<int> ids_;
  bool started_ = false;
  DeviceBuffer values_;
  DeviceBuffer partials_;  // (chunks, 2): the GPU's per-chunk min and max (ops::kRangeChunk)
  int64_t partial_rows_ = 0;
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
