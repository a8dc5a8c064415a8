// The fused PSGD optimizer step on the CPU: one pass over the flat buffers, segment by segment,
// in one parallel region (segments are split among threads without barriers between them).
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/quant_math.h"

namespace psgd::cpu {
namespace {

// One row of the segment table.
struct Segment {
  int64_t offset, count;
  ops::PsgTarget target;
  float levels, delta;
};

// Row `r` of the segment table, with the grid step of its range when it has one.
Segment segment_of(const Tensor& segments, const Tensor& ranges, int64_t r) {
  const int32_t* t = segments.i32() + r * ops::kSegmentFields;
  Segment s{t[ops::kSegmentOffset], t[ops::kSegmentCount],
            static_cast<ops::PsgTarget>(t[ops::kSegmentTarget]),
            static_cast<float>(t[ops::kSegmentLevels]), 0.0f};
  const int32_t range = t[ops::kSegmentRange];
  if (range >= 0 && s.target == ops::PsgTarget::Grid)
    s.delta = quant::weight_delta(ranges.f32()[2 * range], ranges.f32()[2 * range + 1],
                                  t[ops::kSegmentLevels]);
  return s;
}

// The gradient after the PSG scaling of its segment.
inline float scaled_gradient(const Segment& s, float lambda, float w, float g) {
  switch (s.target) {
    case ops::PsgTarget::Grid:
      return g * (lambda * std::fabs(w - quant::quantize_weight(w, s.delta, s.levels)));
    case ops::PsgTarget::Zero:
      return g * (lambda * std::fabs(w));
    case ops::PsgTarget::None:
      break;
  }
  return g;
}

// Runs update(i, segment) for every element of every segment.
template <class Update>
void for_each_element(const Tensor& segments, const Tensor& ranges, Update&& update) {
#pragma omp parallel
  for (int64_t r = 0; r < segments.shape[0]; ++r) {
    const Segment s = segment_of(segments, ranges, r);
#pragma omp for schedule(static) nowait
    for (int64_t i = s.offset; i < s.offset + s.count; ++i) update(i, s);
  }
}

}  // namespace

void update_weight_ranges(const Tensor& weights, const Tensor& segments, const Tensor& ranges,
                          bool first) {
  const int32_t* t = segments.i32();
  float* r = ranges.f32();
  for (int64_t row = 0; row < segments.shape[0]; ++row, t += ops::kSegmentFields) {
    const int32_t range = t[ops::kSegmentRange];
    if (range < 0) continue;
    float minmax[2];
    tensor_min_max(
        Tensor(weights.f32() + t[ops::kSegmentOffset], Shape{t[ops::kSegmentCount]}, Device::CPU),
        Tensor(minmax, Shape{2}, Device::CPU));
    r[2 * range] = quant::running_update(r[2 * range], std::min(0.0f, minmax[0]), first);
    r[2 * range + 1] = quant::running_update(r[2 * range + 1], std::max(0.0f, minmax[1]), first);
  }
}

void psgd_sgd_step(const Tensor& weights, const Tensor& grads, const Tensor& momentum,
                   const Tensor& segments, const Tensor& ranges, const Tensor& hyper,
                   ops::SgdStep h) {
  float* w = weights.f32();
  const float* g = grads.f32();
  float* buf = momentum.f32();
  const float lr = hyper.f32()[ops::kHyperLr];
  for_each_element(segments, ranges, [&](int64_t i, const Segment& s) {
    const float d = scaled_gradient(s, h.lambda, w[i], g[i]) + h.weight_decay * w[i];
    buf[i] = h.first ? d : h.momentum * buf[i] + d;
    w[i] -= lr * buf[i];
  });
}

void psgd_adam_step(const Tensor& weights, const Tensor& grads, const Tensor& m, const Tensor& v,
                    const Tensor& segments, const Tensor& ranges, const Tensor& hyper,
                    ops::AdamStep h) {
  float* w = weights.f32();
  const float* g = grads.f32();
  float* mp = m.f32();
  float* vp = v.f32();
  const float step_size = hyper.f32()[ops::kHyperAdamStepSize];
  const float root_bias2 = hyper.f32()[ops::kHyperAdamRootBias2];
  for_each_element(segments, ranges, [&](int64_t i, const Segment& s) {
    const float d = scaled_gradient(s, h.lambda, w[i], g[i]) + h.weight_decay * w[i];
    mp[i] = h.beta1 * mp[i] + (1.0f - h.beta1) * d;
    vp[i] = h.beta2 * vp[i] + (1.0f - h.beta2) * d * d;
    w[i] -= step_size * (mp[i] / (std::sqrt(vp[i]) / root_bias2 + h.eps));
  });
}

}  // namespace psgd::cpu
