#include "engine/weight_quant.h"

#include <algorithm>

#include "kernels/ops.h"
#include "kernels/quant_math.h"

namespace psgd {
namespace {

// {min(0, min w), max(0, max w)} of one tensor, through a two-float device scratch.
std::pair<float, float> zero_inclusive_range(Context& ctx, const Tensor& w,
                                             const Tensor& scratch2) {
  ops::tensor_min_max(ctx, w, scratch2);
  float host[2];
  memory_copy(host, Device::CPU, scratch2.data, scratch2.device, sizeof host);
  return {std::min(0.0f, host[0]), std::max(0.0f, host[1])};
}

}  // namespace

RunningRanges::RunningRanges(const ParamStore& params) {
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id)
    if (params.entry(id).quant.quantized()) ids_.push_back(id);
  x_min_.assign(ids_.size(), 0.0f);
  x_max_.assign(ids_.size(), 0.0f);
  scratch_ = DeviceBuffer(params.device(), 2 * sizeof(float));
}

void RunningRanges::update(Context& ctx, const ParamStore& params) {
  const Tensor scratch = scratch_.f32(0, Shape{2});
  for (size_t i = 0; i < ids_.size(); ++i) {
    const auto [lo, hi] = zero_inclusive_range(ctx, params.value(ids_[i]), scratch);
    x_min_[i] = quant::running_update(x_min_[i], lo, !started_);
    x_max_[i] = quant::running_update(x_max_[i], hi, !started_);
  }
  started_ = true;
}

float RunningRanges::delta(size_t i, const ParamStore& params) const {
  PSGD_CHECK(started_, "quantizer ranges used before the first training step");
  return quant::weight_delta(x_min_[i], x_max_[i],
                             quant::weight_levels(params.entry(ids_[i]).quant.bits));
}

void RunningRanges::restore(std::vector<float> x_min, std::vector<float> x_max) {
  PSGD_CHECK(x_min.size() == ids_.size() && x_max.size() == ids_.size(), "saved ranges cover ",
             x_min.size(), " tensors, the network quantizes ", ids_.size());
  x_min_ = std::move(x_min);
  x_max_ = std::move(x_max);
  started_ = true;
}

float fresh_delta(Context& ctx, const Tensor& w, int bits, const Tensor& scratch2) {
  const auto [lo, hi] = zero_inclusive_range(ctx, w, scratch2);
  return quant::weight_delta(lo, hi, quant::weight_levels(bits));
}

void quantize_in_place(Context& ctx, ParamStore& params) {
  DeviceBuffer scratch(params.device(), 2 * sizeof(float));
  const Tensor s = scratch.f32(0, Shape{2});
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const QuantSpec& q = params.entry(id).quant;
    if (!q.quantized()) continue;
    const Tensor w = params.value(id);
    ops::quantize_weights(ctx, w, fresh_delta(ctx, w, q.bits, s), quant::weight_levels(q.bits), w);
  }
}

WeightsSnapshot::WeightsSnapshot(ParamStore& params)
    : params_(params), copy_(params.device(), params.weights().bytes()) {
  const Tensor w = params.weights();
  memory_copy(copy_.data(), copy_.device(), w.data, w.device, w.bytes());
}

WeightsSnapshot::~WeightsSnapshot() {
  const Tensor w = params_.weights();
  memory_copy(w.data, w.device, copy_.data(), copy_.device(), w.bytes());
}

}  // namespace psgd
