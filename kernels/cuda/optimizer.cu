// The PSGD optimizer step on CUDA: the element update of the CPU twin, one launch per tensor
// segment for now (one launch over a device-side table is the planned fusion).
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/quant_math.h"

namespace psgd::cuda {
namespace {

__device__ inline float scaled_gradient(ops::PsgTarget target, float delta, float levels,
                                        float lambda, float w, float g) {
  if (target == ops::PsgTarget::Grid)
    return g * (lambda * fabsf(w - quant::quantize_weight(w, delta, levels)));
  if (target == ops::PsgTarget::Zero) return g * (lambda * fabsf(w));
  return g;
}

}  // namespace

void psgd_sgd_step(const Tensor& weights, const Tensor& grads, const Tensor& momentum,
                   std::span<const ops::OptimSegment> segments, ops::SgdStep h) {
  for (const ops::OptimSegment& s : segments) {
    float* w = weights.f32() + s.offset;
    const float* g = grads.f32() + s.offset;
    float* buf = momentum.f32() + s.offset;
    const ops::PsgTarget target = s.target;
    const float delta = s.delta, levels = s.levels;
    for_each(s.count, [=] __device__(int64_t i) {
      const float d = scaled_gradient(target, delta, levels, h.lambda, w[i], g[i]) + h.weight_decay * w[i];
      buf[i] = h.first ? d : h.momentum * buf[i] + d;
      w[i] -= h.lr * buf[i];
    });
  }
}

void psgd_adam_step(const Tensor& weights, const Tensor& grads, const Tensor& m, const Tensor& v,
                    std::span<const ops::OptimSegment> segments, ops::AdamStep h) {
  const double t = static_cast<double>(h.step);
  const float step_size = static_cast<float>(h.lr / (1.0 - std::pow(h.beta1, t)));
  const float root_correction2 = static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, t)));
  for (const ops::OptimSegment& s : segments) {
    float* w = weights.f32() + s.offset;
    const float* g = grads.f32() + s.offset;
    float* mp = m.f32() + s.offset;
    float* vp = v.f32() + s.offset;
    const ops::PsgTarget target = s.target;
    const float delta = s.delta, levels = s.levels;
    for_each(s.count, [=] __device__(int64_t i) {
      const float d = scaled_gradient(target, delta, levels, h.lambda, w[i], g[i]) + h.weight_decay * w[i];
      mp[i] = h.beta1 * mp[i] + (1.0f - h.beta1) * d;
      vp[i] = h.beta2 * vp[i] + (1.0f - h.beta2) * d * d;
      w[i] -= step_size * (mp[i] / (sqrtf(vp[i]) / root_correction2 + h.eps));
    });
  }
}

}  // namespace psgd::cuda
