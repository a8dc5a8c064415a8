#include "engine/optim.h"

#include <algorithm>
#include <limits>

#include "kernels/quant_math.h"

namespace psgd {
namespace {

constexpr size_t kNoRange = std::numeric_limits<size_t>::max();

ops::PsgTarget target_of(const QuantSpec& q, float lambda_s) {
  if (!q.quantized() || !q.psg || lambda_s == 0.0f) return ops::PsgTarget::None;
  return q.target == QuantTarget::Zero ? ops::PsgTarget::Zero : ops::PsgTarget::Grid;
}

}  // namespace

Optimizer::Optimizer(ParamStore& params, OptimizerConfig config)
    : params_(params), config_(config), ranges_(params) {
  PSGD_CHECK(params.allocated(), "the optimizer needs allocated parameters");
  PSGD_CHECK(config.weight_decay >= 0.0f && config.lambda_s >= 0.0f && config.momentum >= 0.0f,
             "weight decay, lambda_s and momentum must not be negative");
  const std::vector<int>& quantized = ranges_.ids();
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) != ParamStorage::Trainable) continue;
    ops::OptimSegment s;
    s.offset = e.offset;
    s.count = e.shape.numel();
    s.target = target_of(e.quant, config.lambda_s);
    if (s.target == ops::PsgTarget::Grid)
      s.levels = static_cast<float>(quant::weight_levels(e.quant.bits));
    segments_.push_back(s);
    const auto at = std::find(quantized.begin(), quantized.end(), id);
    range_of_segment_.push_back(at == quantized.end() ? kNoRange
                                                      : static_cast<size_t>(at - quantized.begin()));
  }
  state_ = DeviceBuffer(params.device(), state_count() * params.weights().bytes());
}

Tensor Optimizer::state(int index) const {
  PSGD_CHECK(index >= 0 && index < state_count(), "no optimizer state ", index);
  return state_.f32(index * params_.trainable_count(), Shape{params_.trainable_count()});
}

void Optimizer::step(Context& ctx, float lr) {
  const bool grid = std::any_of(segments_.begin(), segments_.end(), [](const ops::OptimSegment& s) {
    return s.target == ops::PsgTarget::Grid;
  });
  if (!ranges_.ids().empty()) ranges_.update(ctx, params_);
  if (grid)
    for (size_t i = 0; i < segments_.size(); ++i)
      if (segments_[i].target == ops::PsgTarget::Grid)
        segments_[i].delta = ranges_.delta(range_of_segment_[i], params_);
  ++steps_;
  if (config_.kind == OptimizerKind::Sgd) {
    ops::psgd_sgd_step(ctx, params_.weights(), params_.grads(), state(0), segments_,
                       {lr, config_.momentum, config_.weight_decay, config_.lambda_s, steps_ == 1});
  } else {
    ops::psgd_adam_step(ctx, params_.weights(), params_.grads(), state(0), state(1), segments_,
                        {lr, config_.beta1, config_.beta2, config_.eps, config_.weight_decay,
                         config_.lambda_s, steps_});
  }
}

}  // namespace psgd
