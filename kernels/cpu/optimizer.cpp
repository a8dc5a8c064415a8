// The fused PSGD optimizer step on the CPU: one pass over the flat buffers, segment by segment,
// in one parallel region (segments are split among threads without barriers between them).
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/optim_math.h"
#include "kernels/quant_math.h"

namespace psgd::cpu {
namespace {

using optim_math::Segment;

// Runs update(i, segment) for every element of every segment.
template <class Update>
void for_each_element(const Tensor& segments, const Tensor& ranges, Update&& update) {
#pragma omp parallel
  for (int64_t r = 0; r < segments.shape[0]; ++r) {
    const Segment s =
        optim_math::read_segment(segments.i32() + r * ops::kSegmentFields, ranges.f32());
#pragma omp for simd schedule(static) nowait
    for (int64_t i = s.offset; i < s.offset + s.count; ++i) update(i, s);
  }
}

}  // namespace

void update_weight_ranges(const Tensor& weights, const Tensor& segments, const Tensor& ranges,
                          const Tensor&, bool first) {
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
    optim_math::sgd_update(s, h, lr, w[i], g[i], buf[i]);
  });
}

void set_step_values(const Tensor& hyper, const Tensor& steps, float lr, double steps_done) {
  hyper.f32()[ops::kHyperLr] = lr;
  steps.f64()[0] = steps_done;
}

void adam_advance(const Tensor& hyper, const Tensor& steps, double beta1, double beta2) {
  const double t = ++steps.f64()[0];
  optim_math::adam_corrections(beta1, beta2, t, hyper.f32());
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
    optim_math::adam_update(s, h, step_size, root_bias2, w[i], g[i], mp[i], vp[i]);
  });
}

}  // namespace psgd::cpu
