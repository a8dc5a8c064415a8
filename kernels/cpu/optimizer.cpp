// The fused PSGD optimizer step on the CPU: one pass over the flat buffers, segment by segment,
// in one parallel region (segments are split among threads without barriers between them).
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/quant_math.h"

namespace psgd::cpu {
namespace {

// The gradient after the PSG scaling of its segment.
inline float scaled_gradient(const ops::OptimSegment& s, float lambda, float w, float g) {
  switch (s.target) {
    case ops::PsgTarget::Grid:
      return g * (lambda * std::fabs(w - quant::quantize_weight(w, s.delta, s.levels)));
    case ops::PsgTarget::Zero: return g * (lambda * std::fabs(w));
    case ops::PsgTarget::None: break;
  }
  return g;
}

// Runs update(i, segment) for every element of every segment.
template <class Update>
void for_each_element(std::span<const ops::OptimSegment> segments, Update&& update) {
#pragma omp parallel
  for (const ops::OptimSegment& s : segments) {
#pragma omp for schedule(static) nowait
    for (int64_t i = s.offset; i < s.offset + s.count; ++i) update(i, s);
  }
}

}  // namespace

void psgd_sgd_step(const Tensor& weights, const Tensor& grads, const Tensor& momentum,
                   std::span<const ops::OptimSegment> segments, ops::SgdStep h) {
  float* w = weights.f32();
  const float* g = grads.f32();
  float* buf = momentum.f32();
  for_each_element(segments, [&](int64_t i, const ops::OptimSegment& s) {
    const float d = scaled_gradient(s, h.lambda, w[i], g[i]) + h.weight_decay * w[i];
    buf[i] = h.first ? d : h.momentum * buf[i] + d;
    w[i] -= h.lr * buf[i];
  });
}

void psgd_adam_step(const Tensor& weights, const Tensor& grads, const Tensor& m, const Tensor& v,
                    std::span<const ops::OptimSegment> segments, ops::AdamStep h) {
  float* w = weights.f32();
  const float* g = grads.f32();
  float* mp = m.f32();
  float* vp = v.f32();
  // PyTorch's Adam: step_size = lr / (1 - beta1^t); denom = sqrt(v) / sqrt(1 - beta2^t) + eps.
  const double t = static_cast<double>(h.step);
  const float step_size = static_cast<float>(h.lr / (1.0 - std::pow(h.beta1, t)));
  const float root_correction2 = static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, t)));
  for_each_element(segments, [&](int64_t i, const ops::OptimSegment& s) {
    const float d = scaled_gradient(s, h.lambda, w[i], g[i]) + h.weight_decay * w[i];
    mp[i] = h.beta1 * mp[i] + (1.0f - h.beta1) * d;
    vp[i] = h.beta2 * vp[i] + (1.0f - h.beta2) * d * d;
    w[i] -= step_size * (mp[i] / (std::sqrt(vp[i]) / root_correction2 + h.eps));
  });
}

}  // namespace psgd::cpu
