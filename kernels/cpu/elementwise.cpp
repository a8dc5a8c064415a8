// Elementwise ops on the CPU: ReLU, add, gradient routing and dropout. Plain loops over
// restrict-qualified pointers, so that the compiler vectorises them.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/rng.h"

namespace psgd::cpu {
namespace {

template <bool kAccumulate>
inline void store(float* __restrict out, int64_t i, float value) {
  if constexpr (kAccumulate)
    out[i] += value;
  else
    out[i] = value;
}

template <bool kAccumulate>
void relu_backward_loop(const float* __restrict y, const float* __restrict dy, float* __restrict dx,
                        int64_t n) {
  // Both loads unconditional: a select vectorises, a branch on the sign mispredicts half the time.
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = dy[i];
    store<kAccumulate>(dx, i, y[i] > 0.0f ? g : 0.0f);
  }
}

template <bool kAccumulate>
void copy_loop(const float* __restrict src, float* __restrict dst, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) store<kAccumulate>(dst, i, src[i]);
}

// y = x * scale where element i is kept, 0 where it is dropped.
template <bool kAccumulate>
void dropout_loop(const float* __restrict x, float* __restrict y, int64_t n, uint64_t key, float p,
                  float scale) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    store<kAccumulate>(y, i, rng::uniform(key, i) < p ? 0.0f : x[i] * scale);
}

float keep_scale(float p) {
  return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
}

uint64_t mask_key(uint64_t seed, uint64_t stream, const Tensor& mask_index) {
  const uint32_t index = mask_index.defined() ? static_cast<uint32_t>(mask_index.i32()[0]) : 0u;
  return rng::stream_key(seed, stream | index);
}

}  // namespace

void relu_forward(const Tensor& x, const Tensor& y) {
  const float* __restrict in = x.f32();
  float* __restrict out = y.f32();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

void relu_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, GradMode dx_mode) {
  if (dx_mode == GradMode::Accumulate)
    relu_backward_loop<true>(y.f32(), dy.f32(), dx.f32(), dx.numel());
  else
    relu_backward_loop<false>(y.f32(), dy.f32(), dx.f32(), dx.numel());
}

void add_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  const float* __restrict pa = a.f32();
  const float* __restrict pb = b.f32();
  float* __restrict out = y.f32();
  const int64_t n = y.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = pa[i] + pb[i];
}

void add_relu_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  const float* __restrict pa = a.f32();
  const float* __restrict pb = b.f32();
  float* __restrict out = y.f32();
  const int64_t n = y.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float v = pa[i] + pb[i];
    out[i] = v > 0.0f ? v : 0.0f;
  }
}

void grad_pass(const Tensor& src, const Tensor& dst, GradMode mode) {
  if (mode == GradMode::Accumulate)
    copy_loop<true>(src.f32(), dst.f32(), dst.numel());
  else
    copy_loop<false>(src.f32(), dst.f32(), dst.numel());
}

void dropout_forward(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& y,
                     const Tensor& mask_index) {
  dropout_loop<false>(x.f32(), y.f32(), x.numel(), mask_key(seed, stream, mask_index), p,
                      keep_scale(p));
}

void dropout_backward(const Tensor& dy, float p, uint64_t seed, uint64_t stream, const Tensor& dx,
                      GradMode dx_mode, const Tensor& mask_index) {
  const uint64_t key = mask_key(seed, stream, mask_index);
  if (dx_mode == GradMode::Accumulate)
    dropout_loop<true>(dy.f32(), dx.f32(), dx.numel(), key, p, keep_scale(p));
  else
    dropout_loop<false>(dy.f32(), dx.f32(), dx.numel(), key, p, keep_scale(p));
}

void count_up(const Tensor& counter) {
  int32_t& c = counter.i32()[0];
  c = static_cast<int32_t>(static_cast<uint32_t>(c) + 1u);
}

}  // namespace psgd::cpu
