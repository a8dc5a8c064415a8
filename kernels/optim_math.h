// The PSGD optimizer's arithmetic, element by element, shared by the CPU step and its CUDA twin:
// a row of the segment table read into a Segment, the PSG scaling of a gradient, and PyTorch's
// SGD and Adam updates.
#pragma once

#include <cstdint>

#include "kernels/ops.h"
#include "kernels/quant_math.h"

namespace psgd::optim_math {

// One trainable tensor of the flat buffers, with the grid step of its range this step.
struct Segment {
  int64_t offset, count;
  ops::PsgTarget target;
  float levels, delta;
};

// Row `row` (kSegmentFields int32) of the table; `ranges` holds {x_min, x_max} per range.
PSGD_HOST_DEVICE inline Segment read_segment(const int32_t* row, const float* ranges) {
  Segment s{row[ops::kSegmentOffset], row[ops::kSegmentCount],
            static_cast<ops::PsgTarget>(row[ops::kSegmentTarget]),
            static_cast<float>(row[ops::kSegmentLevels]), 0.0f};
  const int32_t range = row[ops::kSegmentRange];
  if (range >= 0 && s.target == ops::PsgTarget::Grid)
    s.delta =
        quant::weight_delta(ranges[2 * range], ranges[2 * range + 1], row[ops::kSegmentLevels]);
  return s;
}

// The gradient after the PSG scaling of its segment, plus L2 weight decay. Selects, not
// branches, so that the CPU's loop over a segment vectorises: the distance to the nearest level
// is |w| where delta is 0, as it is to Q(w) = 0, and a scale of 1 leaves g as it is.
PSGD_HOST_DEVICE inline float decayed_gradient(const Segment& s, float lambda, float weight_decay,
                                               float w, float g) {
  const float distance = s.target == ops::PsgTarget::Grid
                             ? fabsf(w - quant::nearest_weight_level(w, s.delta, s.levels))
                             : fabsf(w);
  const float scale = s.target == ops::PsgTarget::None ? 1.0f : lambda * distance;
  return g * scale + weight_decay * w;
}

// PyTorch's SGD with momentum (dampening 0): the buffer starts as the first update.
PSGD_HOST_DEVICE inline void sgd_update(const Segment& s, const ops::SgdStep& h, float lr, float& w,
                                        float g, float& buf) {
  const float d = decayed_gradient(s, h.lambda, h.weight_decay, w, g);
  buf = h.first ? d : h.momentum * buf + d;
  w -= lr * buf;
}

// Adam's bias corrections for step t (from 1) at learning rate lr, in double as PyTorch computes
// them: hyper's step size lr / (1 - beta1^t) and sqrt(1 - beta2^t).
PSGD_HOST_DEVICE inline void adam_corrections(double beta1, double beta2, double t, float* hyper) {
  const double lr = hyper[ops::kHyperLr];
  hyper[ops::kHyperAdamStepSize] = static_cast<float>(lr / (1.0 - pow(beta1, t)));
  hyper[ops::kHyperAdamRootBias2] = static_cast<float>(sqrt(1.0 - pow(beta2, t)));
}

// PyTorch's Adam: step_size = lr / (1 - beta1^t), denominator sqrt(v) / sqrt(1 - beta2^t) + eps,
// and its addcdiv's order: w + (-step_size * m) / denominator.
PSGD_HOST_DEVICE inline void adam_update(const Segment& s, const ops::AdamStep& h, float step_size,
                                         float root_bias2, float& w, float g, float& m, float& v) {
  const float d = decayed_gradient(s, h.lambda, h.weight_decay, w, g);
  m = h.beta1 * m + h.one_minus_beta1 * d;
  v = h.beta2 * v + h.one_minus_beta2 * d * d;
  w -= step_size * m / (sqrtf(v) / root_bias2 + h.eps);
}

}  // namespace psgd::optim_math
