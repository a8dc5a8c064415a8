#include "kernels/cpu/staging.h"

#include "kernels/cpu/cpu_ops.h"

namespace psgd::cpu {

int64_t staging_floats(std::initializer_list<Shape> shapes) {
  int64_t floats = 0;
  for (const Shape& s : shapes) floats += s.numel();
  return floats;
}

Tensor Staging::take(const Shape& shape) {
  const Tensor all = ctx_.workspace(next_ + shape.numel());
  Tensor t(all.f32() + next_, shape, Device::CPU);
  next_ += shape.numel();
  return t;
}

Tensor Staging::widened(const Tensor& t) {
  if (!t.defined() || t.dtype == DType::F32) return t;
  const Tensor copy = take(t.shape);
  cast(t, copy);
  return copy;
}

Tensor Staging::weights(const Tensor& w) {
  if (!bf16_) return w;
  const Tensor copy = take(w.shape);
  const float* in = w.f32();
  float* out = copy.f32();
  for (int64_t i = 0; i < w.numel(); ++i) out[i] = to_float(to_bf16(in[i]));
  return copy;
}

Tensor Staging::output_for(const Tensor& result, ops::GradMode mode) {
  if (!result.defined() || result.dtype == DType::F32) return result;
  return mode == ops::GradMode::Accumulate ? widened(result) : take(result.shape);
}

void unstage(const Tensor& staged, const Tensor& result) {
  if (result.defined() && result.dtype != DType::F32) cast(staged, result);
}

void round_to_bf16_precision(const Tensor& t) {
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = to_float(to_bf16(p[i]));
}

}  // namespace psgd::cpu
