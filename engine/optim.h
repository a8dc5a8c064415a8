// The optimizer: SGD with momentum or Adam, PyTorch semantics, with the PSG gradient scaling of
// every quantized tensor fused into one pass over the flat buffers.
#pragma once

#include <limits>

#include "engine/params.h"
#include "engine/weight_quant.h"
#include "kernels/ops.h"

namespace psgd {

enum class OptimizerKind : uint8_t { Sgd, Adam };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::Sgd;
  float momentum = 0.9f;       // SGD (dampening 0, no Nesterov)
  float weight_decay = 1e-4f;  // L2, added to the gradient after the PSG scaling
  float lambda_s = 0.0f;       // PSG strength; 0 is plain (vanilla) training
  // Adam. Its betas in double, as PyTorch takes them from Python: it rounds beta and 1 - beta
  // to float32 separately (ops::AdamStep), and its bias corrections stay in double.
  double beta1 = 0.9, beta2 = 0.999;
  float eps = 1e-8f;
};

class Optimizer {
 public:
  Optimizer(ParamStore& params, OptimizerConfig config);

  // One update of every trainable tensor from params.grads(), at learning rate `lr`. Updates the
  // quantizer ranges from the weights first, as the reference does in its forward pass.
  void step(Context& ctx, float lr) {
    prepare(ctx, lr);
    apply(ctx);
  }
  // The two halves of step(), for captured steps: prepare() counts the step and, when the
  // learning rate changes, writes it to the device in the order of ctx's work; apply() launches
  // the kernels, which read it there (Adam's first advances the step count and bias corrections
  // on the device). One apply() per prepare().
  void prepare(Context& ctx, float lr);
  void apply(Context& ctx);
  // Whether apply() launches the same kernels with the same arguments as at the previous step,
  // so that a captured step may replay it: true after the first step.
  bool replayable() const { return steps_ >= 2 && (ranges_.ids().empty() || ranges_.started()); }

  const OptimizerConfig& config() const { return config_; }
  int64_t steps() const { return steps_; }
  const RunningRanges& ranges() const { return ranges_; }
  RunningRanges& ranges() { return ranges_; }
  // The state buffers (SGD: momentum; Adam: first then second moments), for checkpoints.
  Tensor state(int index) const;
  int state_count() const { return config_.kind == OptimizerKind::Sgd ? 1 : 2; }
  void set_steps(int64_t steps) { steps_ = steps; }
  Tensor segments() const;

 private:
  ParamStore& params_;
  OptimizerConfig config_;
  RunningRanges ranges_;
  DeviceBuffer segments_;  // the segment table (kernels/ops.h), int32 (tensors, fields)
  int64_t segment_rows_ = 0;
  DeviceBuffer hyper_;       // this step's lr and Adam corrections (ops::HyperField)
  DeviceBuffer adam_steps_;  // float64: the steps Adam's corrections have counted, on the device
  float uploaded_lr_ = std::numeric_limits<float>::quiet_NaN();  // hyper_'s lr (NaN: none yet)
  int64_t counted_steps_ = -1;  // steps_ as adam_steps_ will hold it after the queued apply()
  DeviceBuffer state_;
  int64_t steps_ = 0;
};

}  // namespace psgd
