// The quantizer arithmetic of the reference, element by element, shared by the CPU kernels and
// their CUDA twins. Every step is the float32 operation the reference performs, in its order.
#pragma once

#include <cmath>

#include "kernels/rng.h"  // PSGD_HOST_DEVICE

namespace psgd::quant {

// Symmetric "restricted" weight grid: integer levels -L .. L with L = 2^(bits-1) - 1.
PSGD_HOST_DEVICE inline int weight_levels(int bits) { return (1 << (bits - 1)) - 1; }
// Unsigned activation grid after ReLU: levels 0 .. 2^bits - 1.
PSGD_HOST_DEVICE inline int activation_levels(int bits) { return (1 << bits) - 1; }

// delta = max(|x_min|, x_max) / L
PSGD_HOST_DEVICE inline float weight_delta(float x_min, float x_max, int levels) {
  return fmaxf(fabsf(x_min), x_max) / static_cast<float>(levels);
}

// min(max(v, lo), hi) as fminf(fmaxf(v, lo), hi) computes it, NaN giving lo, but in selects,
// which the CPU compilers vectorise (they call fminf and fmaxf).
PSGD_HOST_DEVICE inline float clamp_to(float v, float lo, float hi) {
  v = v > lo ? v : lo;
  return v < hi ? v : hi;
}

// delta * round(clamp(w / delta, -L, L)), rounding half to even (the default rounding mode, as
// torch.round), without a branch: for delta 0 it is +-0 (a NaN quotient clamps to -L).
PSGD_HOST_DEVICE inline float nearest_weight_level(float w, float delta, float levels) {
  return delta * nearbyintf(clamp_to(w / delta, -levels, levels));
}

// Q(w): the nearest level. An all-zero tensor has delta 0 and quantizes to 0.
PSGD_HOST_DEVICE inline float quantize_weight(float w, float delta, float levels) {
  if (delta == 0.0f) return 0.0f;
  return nearest_weight_level(w, delta, levels);
}

// y = delta * round(clamp(x / delta, 0, levels)): ReLU and quantization in one.
PSGD_HOST_DEVICE inline float quantize_activation(float x, float delta, float levels) {
  if (delta == 0.0f) return 0.0f;
  return delta * nearbyintf(clamp_to(x / delta, 0.0f, levels));
}

// The running range update of the reference: the first pass sets it, later ones move it by
// momentum 0.1 toward the current value.
PSGD_HOST_DEVICE inline float running_update(float old_value, float now, bool first) {
  return first ? now : 0.1f * now + 0.9f * old_value;
}

}  // namespace psgd::quant
