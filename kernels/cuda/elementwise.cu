// Elementwise ops on CUDA: ReLU, add, gradient routing and dropout (the same counter-based RNG
// as the CPU, so the same masks).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/rng.h"

namespace psgd::cuda {
namespace {

// dst[i] = value(i), or dst[i] += value(i).
template <class F>
void write_grad(const Tensor& dst, GradMode mode, F value) {
  float* out = dst.f32();
  if (mode == GradMode::Accumulate)
    for_each(dst.numel(), [=] __device__(int64_t i) { out[i] += value(i); });
  else
    for_each(dst.numel(), [=] __device__(int64_t i) { out[i] = value(i); });
}

__host__ __device__ inline float keep_scale(float p) {
  return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
}

}  // namespace

void relu_forward(const Tensor& x, const Tensor& y) {
  const float* in = x.f32();
  float* out = y.f32();
  for_each(x.numel(), [=] __device__(int64_t i) { out[i] = in[i] > 0.0f ? in[i] : 0.0f; });
}

void relu_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, GradMode dx_mode) {
  const float* out = y.f32();
  const float* g = dy.f32();
  write_grad(dx, dx_mode, [=] __device__(int64_t i) { return out[i] > 0.0f ? g[i] : 0.0f; });
}

void add_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  const float* pa = a.f32();
  const float* pb = b.f32();
  float* out = y.f32();
  for_each(y.numel(), [=] __device__(int64_t i) { out[i] = pa[i] + pb[i]; });
}

void add_relu_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  const float* pa = a.f32();
  const float* pb = b.f32();
  float* out = y.f32();
  for_each(y.numel(), [=] __device__(int64_t i) {
    const float v = pa[i] + pb[i];
    out[i] = v > 0.0f ? v : 0.0f;
  });
}

void grad_pass(const Tensor& src, const Tensor& dst, GradMode mode) {
  const float* g = src.f32();
  write_grad(dst, mode, [=] __device__(int64_t i) { return g[i]; });
}

namespace {

// The mask's key: from (seed, stream), or with a device-side index from (seed, stream | index),
// read by each thread so that a replayed graph sees the index of its own step.
struct MaskKey {
  uint64_t seed, stream;
  const int32_t* index;  // null: none
  __device__ uint64_t operator()() const {
    return rng::stream_key(seed, index ? stream | static_cast<uint32_t>(*index) : stream);
  }
};

MaskKey mask_key(uint64_t seed, uint64_t stream, const Tensor& mask_index) {
  return {seed, stream, mask_index.defined() ? mask_index.i32() : nullptr};
}

}  // namespace

void dropout_forward(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& y,
                     const Tensor& mask_index) {
  const MaskKey key = mask_key(seed, stream, mask_index);
  const float scale = keep_scale(p);
  const float* in = x.f32();
  float* out = y.f32();
  for_each(x.numel(), [=] __device__(int64_t i) {
    out[i] = rng::uniform(key(), i) < p ? 0.0f : in[i] * scale;
  });
}

void dropout_backward(const Tensor& dy, float p, uint64_t seed, uint64_t stream, const Tensor& dx,
                      GradMode dx_mode, const Tensor& mask_index) {
  const MaskKey key = mask_key(seed, stream, mask_index);
  const float scale = keep_scale(p);
  const float* g = dy.f32();
  write_grad(dx, dx_mode, [=] __device__(int64_t i) {
    return rng::uniform(key(), i) < p ? 0.0f : g[i] * scale;
  });
}

void count_up(const Tensor& counter) {
  int32_t* c = counter.i32();
  for_each(1,
           [=] __device__(int64_t) { *c = static_cast<int32_t>(static_cast<uint32_t>(*c) + 1u); });
}

}  // namespace psgd::cuda
