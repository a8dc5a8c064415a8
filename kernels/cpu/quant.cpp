// Quantization kernels on the CPU: per-tensor range, weight and activation quantize-dequantize.
#include <algorithm>
#include <limits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/quant_math.h"

namespace psgd::cpu {

void tensor_min_max(const Tensor& x, const Tensor& out) {
  const int64_t n = x.numel();
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  with_activation_type(x.dtype, [&](auto t) {
    const auto* __restrict p = x.as<decltype(t)>();
#pragma omp parallel for simd reduction(min : lo) reduction(max : hi) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      lo = std::min(lo, load(p, i));
      hi = std::max(hi, load(p, i));
    }
  });
  out.f32()[0] = lo;
  out.f32()[1] = hi;
}

namespace {

// y[i] = f(x[i]) in parallel; y may be x (a quantizing ReLU in place).
template <class T, class F>
void map_elements(const Tensor& x, const Tensor& y, F&& f) {
  const T* in = x.as<T>();
  T* out = y.as<T>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) store(out, i, f(load(in, i)));
}

}  // namespace

void quantize_weights(const Tensor& x, float delta, int levels, const Tensor& y) {
  const float l = static_cast<float>(levels);
  map_elements<float>(x, y, [=](float v) { return quant::quantize_weight(v, delta, l); });
}

void quantize_activations(const Tensor& x, float delta, int levels, const Tensor& y) {
  const float l = static_cast<float>(levels);
  with_activation_type(x.dtype, [&](auto t) {
    map_elements<decltype(t)>(x, y,
                              [=](float v) { return quant::quantize_activation(v, delta, l); });
  });
}

}  // namespace psgd::cpu
