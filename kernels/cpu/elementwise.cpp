// Elementwise ops on the CPU: ReLU, add, gradient routing and dropout.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/rng.h"

namespace psgd::cpu {
namespace {

// dst[i] = f(i) or dst[i] += f(i), in parallel.
template <class F>
void write_grad(const Tensor& dst, GradMode mode, F&& f) {
  float* out = dst.f32();
  const int64_t n = dst.numel();
  if (mode == GradMode::Accumulate) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] += f(i);
  } else {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = f(i);
  }
}

}  // namespace

void relu_forward(const Tensor& x, const Tensor& y) {
  const float* in = x.f32();
  float* out = y.f32();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

void relu_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, GradMode dx_mode) {
  const float* out = y.f32();
  const float* g = dy.f32();
  write_grad(dx, dx_mode, [&](int64_t i) { return out[i] > 0.0f ? g[i] : 0.0f; });
}

void add_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  const float* pa = a.f32();
  const float* pb = b.f32();
  float* out = y.f32();
  const int64_t n = y.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = pa[i] + pb[i];
}

void grad_pass(const Tensor& src, const Tensor& dst, GradMode mode) {
  const float* g = src.f32();
  write_grad(dst, mode, [&](int64_t i) { return g[i]; });
}

void dropout_forward(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& y) {
  const uint64_t key = rng::stream_key(seed, stream);
  const float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  const float* in = x.f32();
  float* out = y.f32();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = rng::uniform(key, i) < p ? 0.0f : in[i] * scale;
}

void dropout_backward(const Tensor& dy, float p, uint64_t seed, uint64_t stream,
                      const Tensor& dx, GradMode dx_mode) {
  const uint64_t key = rng::stream_key(seed, stream);
  const float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  const float* g = dy.f32();
  write_grad(dx, dx_mode, [&](int64_t i) { return rng::uniform(key, i) < p ? 0.0f : g[i] * scale; });
}

}  // namespace psgd::cpu
