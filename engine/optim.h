// The optimizer: SGD with momentum or Adam, PyTorch semantics, with the PSG gradient scaling of
// every quantized tensor fused into one pass over the flat buffers.
#pragma once

#include "engine/params.h"
#include "engine/weight_quant.h"
#include "kernels/ops.h"

namespace psgd {

enum class OptimizerKind : uint8_t { Sgd, Adam };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::Sgd;
  float momentum = 0.9f;      // SGD (dampening 0, no Nesterov)
  float weight_decay = 1e-4f; // L2, added to the gradient after the PSG scaling
  float lambda_s = 0.0f;      // PSG strength; 0 is plain (vanilla) training
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;  // Adam
};

class Optimizer {
 public:
  Optimizer(ParamStore& params, OptimizerConfig config);

  // One update of every trainable tensor from params.grads(), at learning rate `lr`. Updates the
  // quantizer ranges from the weights first, as the reference does in its forward pass.
  void step(Context& ctx, float lr);

  const OptimizerConfig& config() const { return config_; }
  int64_t steps() const { return steps_; }
  const RunningRanges& ranges() const { return ranges_; }
  RunningRanges& ranges() { return ranges_; }
  // The state buffers (SGD: momentum; Adam: first then second moments), for checkpoints.
  Tensor state(int index) const;
  int state_count() const { return config_.kind == OptimizerKind::Sgd ? 1 : 2; }
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  ParamStore& params_;
  OptimizerConfig config_;
  RunningRanges ranges_;
  std::vector<ops::OptimSegment> segments_;  // one per trainable tensor, in table order
  std::vector<size_t> range_of_segment_;     // index into ranges_, or npos
  DeviceBuffer state_;
  int64_t steps_ = 0;
};

}  // namespace psgd
