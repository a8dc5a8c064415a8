#include "engine/optim.h"

#include <algorithm>
#include <limits>

#include "kernels/quant_math.h"

namespace psgd {
namespace {

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
  PSGD_CHECK(params.trainable_count() <= std::numeric_limits<int32_t>::max(),
             "the segment table holds int32 offsets: ", params.trainable_count(),
             " trainable values are too many");
  const std::vector<int>& quantized = ranges_.ids();
  std::vector<int32_t> table;
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) != ParamStorage::Trainable) continue;
    const ops::PsgTarget target = target_of(e.quant, config.lambda_s);
    const auto at = std::find(quantized.begin(), quantized.end(), id);
    int32_t row[ops::kSegmentFields];
    row[ops::kSegmentOffset] = static_cast<int32_t>(e.offset);
    row[ops::kSegmentCount] = static_cast<int32_t>(e.shape.numel());
    row[ops::kSegmentTarget] = static_cast<int32_t>(target);
    row[ops::kSegmentLevels] = e.quant.quantized() ? quant::weight_levels(e.quant.bits) : 0;
    row[ops::kSegmentRange] =
        at == quantized.end() ? -1 : static_cast<int32_t>(at - quantized.begin());
    table.insert(table.end(), row, row + ops::kSegmentFields);
    ++segment_rows_;
  }
  ops::number_range_chunks(table.data(), segment_rows_);
  segments_ = DeviceBuffer(params.device(), std::max<size_t>(1, table.size()) * sizeof(int32_t));
  memory_copy(segments_.data(), params.device(), table.data(), Device::CPU,
              table.size() * sizeof(int32_t));
  hyper_ = DeviceBuffer(params.device(), ops::kHyperFields * sizeof(float));
  adam_steps_ = DeviceBuffer(params.device(), sizeof(double));
  state_ = DeviceBuffer(params.device(), state_count() * params.weights().bytes());
}

Tensor Optimizer::segments() const {
  return Tensor(reinterpret_cast<int32_t*>(segments_.data()),
                Shape{segment_rows_, ops::kSegmentFields}, segments_.device());
}

Tensor Optimizer::state(int index) const {
  PSGD_CHECK(index >= 0 && index < state_count(), "no optimizer state ", index);
  return state_.f32(index * params_.trainable_count(), Shape{params_.trainable_count()});
}

void Optimizer::prepare(Context& ctx, float lr) {
  ++steps_;
  // Only when the learning rate changes (once per epoch; every step of a warm-up) or the step
  // count was set from outside: each write is a launch on a GPU, though one that no host waits
  // for. Adam's bias corrections follow the count on the device (ops::adam_advance in apply()).
  const bool recount = config_.kind == OptimizerKind::Adam && counted_steps_ != steps_ - 1;
  if (lr != uploaded_lr_ || recount) {
    ops::set_step_values(ctx, hyper_.f32(0, Shape{ops::kHyperFields}), adam_steps_.f64(0, Shape{1}),
                         lr, static_cast<double>(steps_ - 1));
    uploaded_lr_ = lr;
  }
  counted_steps_ = steps_;
}

void Optimizer::apply(Context& ctx) {
  if (!ranges_.ids().empty()) ranges_.update(ctx, params_.weights(), segments());
  const Tensor hyper = hyper_.f32(0, Shape{ops::kHyperFields});
  if (config_.kind == OptimizerKind::Sgd) {
    ops::psgd_sgd_step(ctx, params_.weights(), params_.grads(), state(0), segments(),
                       ranges_.values(), hyper,
                       {config_.momentum, config_.weight_decay, config_.lambda_s, steps_ == 1});
  } else {
    ops::adam_advance(ctx, hyper, adam_steps_.f64(0, Shape{1}), config_.beta1, config_.beta2);
    ops::psgd_adam_step(
        ctx, params_.weights(), params_.grads(), state(0), state(1), segments(), ranges_.values(),
        hyper,
        ops::AdamStep::from(config_.beta1, config_.beta2, config_.eps, config_.weight_decay,
                            config_.lambda_s));
  }
}

}  // namespace psgd
