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
  int64_t chunks = 0;
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    if (!params.entry(id).quant.quantized()) continue;
    ids_.push_back(id);
    chunks += ops::weight_range_chunks(params.entry(id).shape.numel());
  }
  values_ = DeviceBuffer(params.device(), std::max<size_t>(1, 2 * ids_.size()) * sizeof(float));
  partials_ = DeviceBuffer(params.device(), std::max<int64_t>(1, 2 * chunks) * sizeof(float));
  partial_rows_ = chunks;
}

Tensor RunningRanges::values() const {
  return values_.f32(0, Shape{static_cast<int64_t>(ids_.size()), 2});
}

void RunningRanges::update(Context& ctx, const Tensor& weights, const Tensor& segments) {
  ops::update_weight_ranges(ctx, weights, segments, values(),
                            partials_.f32(0, Shape{partial_rows_, 2}), !started_);
  started_ = true;
}

std::vector<float> RunningRanges::host() const {
  std::vector<float> out(2 * ids_.size());
  const Tensor v = values();
  memory_copy(out.data(), Device::CPU, v.data, v.device, v.bytes());
  return out;
}

std::vector<float> RunningRanges::x_min() const {
  std::vector<float> all = host(), out;
  for (size_t i = 0; i < ids_.size(); ++i) out.push_back(all[2 * i]);
  return out;
}

std::vector<float> RunningRanges::x_max() const {
  std::vector<float> all = host(), out;
  for (size_t i = 0; i < ids_.size(); ++i) out.push_back(all[2 * i + 1]);
  return out;
}

void RunningRanges::restore(const std::vector<float>& x_min, const std::vector<float>& x_max) {
  PSGD_CHECK(x_min.size() == ids_.size() && x_max.size() == ids_.size(), "saved ranges cover ",
             x_min.size(), " tensors, the network quantizes ", ids_.size());
  std::vector<float> all;
  for (size_t i = 0; i < ids_.size(); ++i) {
    all.push_back(x_min[i]);
    all.push_back(x_max[i]);
  }
  const Tensor v = values();
  memory_copy(v.data, v.device, all.data(), Device::CPU, v.bytes());
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
