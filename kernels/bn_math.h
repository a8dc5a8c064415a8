// Batch normalisation's affine step in training, shared by the CPU kernels and their CUDA twins.
// The forward computes its output with it, and the backward of BN + ReLU recomputes the ReLU's
// mask from x with it instead of reading the ReLU's output: one tensor fewer in each of the
// backward's passes. The mask must match the forward's to the bit, so the scale is the float
// product of gamma and the saved float invstd, which the backward holds too.
#pragma once

#include <cmath>
#include <type_traits>

#include "engine/bfloat16.h"
#include "kernels/rng.h"  // PSGD_HOST_DEVICE

namespace psgd::bn_math {

PSGD_HOST_DEVICE inline float training_scale(float gamma, float invstd) {
  return gamma * invstd;
}

// BN's output before any residual and ReLU: subtracting the mean first keeps the precision of
// inputs whose mean is large against their spread. The multiply-add is fused explicitly wherever
// the machine has one, so that every loop computing it rounds alike without relying on each
// compiler contracting each of them the same way.
PSGD_HOST_DEVICE inline float affine(float x, float mean, float scale, float beta) {
#if defined(__CUDA_ARCH__) || defined(__FMA__)
  return fmaf(x - mean, scale, beta);
#else
  return (x - mean) * scale + beta;
#endif
}

// Whether the fused ReLU let the gradient through where BN's output is v: its output, stored in
// T, is positive (in bf16 the positive floats up to 2^-134, half its least value, round to 0).
template <class T>
PSGD_HOST_DEVICE inline bool relu_open(float v) {
  if constexpr (std::is_same_v<T, bf16>)
    return to_float(to_bf16(v)) > 0.0f;
  else
    return v > 0.0f;
}

}  // namespace psgd::bn_math
