// Elementwise ops on CUDA: ReLU, add, gradient routing and dropout (the same counter-based RNG
// as the CPU, so the same masks), for float32 or bf16 activations, and the casts between them.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/rng.h"

namespace psgd::cuda {
namespace {

// dst[i] = value(i), or dst[i] = dst[i] + value(i) rounded once; T is dst's element type.
template <class T, class F>
void write_grad(const Tensor& dst, GradMode mode, F value) {
  T* out = dst.as<T>();
  if (mode == GradMode::Accumulate)
    for_each(dst.numel(), [=] __device__(int64_t i) { store(out, i, load(out, i) + value(i)); });
  else
    for_each(dst.numel(), [=] __device__(int64_t i) { store(out, i, value(i)); });
}

__host__ __device__ inline float keep_scale(float p) {
  return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
}

// The ops for activations of element type T (float or bf16); the public functions dispatch.
template <class T>
void relu_forward_t(const Tensor& x, const Tensor& y) {
  const T* in = x.as<T>();
  T* out = y.as<T>();
  for_each(x.numel(), [=] __device__(int64_t i) {
    const float v = load(in, i);
    store(out, i, v > 0.0f ? v : 0.0f);
  });
}

template <class T>
void relu_backward_t(const Tensor& y, const Tensor& dy, const Tensor& dx, GradMode dx_mode) {
  const T* out = y.as<T>();
  const T* g = dy.as<T>();
  write_grad<T>(dx, dx_mode,
                [=] __device__(int64_t i) { return load(out, i) > 0.0f ? load(g, i) : 0.0f; });
}

template <class T>
void add_forward_t(const Tensor& a, const Tensor& b, const Tensor& y) {
  const T* pa = a.as<T>();
  const T* pb = b.as<T>();
  T* out = y.as<T>();
  for_each(y.numel(), [=] __device__(int64_t i) { store(out, i, load(pa, i) + load(pb, i)); });
}

template <class T>
void add_relu_forward_t(const Tensor& a, const Tensor& b, const Tensor& y) {
  const T* pa = a.as<T>();
  const T* pb = b.as<T>();
  T* out = y.as<T>();
  for_each(y.numel(), [=] __device__(int64_t i) {
    const float v = load(pa, i) + load(pb, i);
    store(out, i, v > 0.0f ? v : 0.0f);
  });
}

template <class T>
void grad_pass_t(const Tensor& src, const Tensor& dst, GradMode mode) {
  const T* g = src.as<T>();
  write_grad<T>(dst, mode, [=] __device__(int64_t i) { return load(g, i); });
}

}  // namespace

void cast(const Tensor& src, const Tensor& dst) {
  if (src.dtype == dst.dtype) {  // on the stream the kernels use, so that a graph records it
    CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyDeviceToDevice,
                               cudaStreamPerThread));
  } else if (src.dtype == DType::F32) {
    const float* in = src.f32();
    bf16* out = dst.bf16s();
    for_each(src.numel(), [=] __device__(int64_t i) { out[i] = to_bf16(in[i]); });
  } else {
    const bf16* in = src.bf16s();
    float* out = dst.f32();
    for_each(src.numel(), [=] __device__(int64_t i) { out[i] = to_float(in[i]); });
  }
}

void relu_forward(const Tensor& x, const Tensor& y) {
  with_activation_type(x.dtype, [&](auto t) { relu_forward_t<decltype(t)>(x, y); });
}

void relu_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, GradMode dx_mode) {
  with_activation_type(y.dtype, [&](auto t) { relu_backward_t<decltype(t)>(y, dy, dx, dx_mode); });
}

void add_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  with_activation_type(a.dtype, [&](auto t) { add_forward_t<decltype(t)>(a, b, y); });
}

void add_relu_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  with_activation_type(a.dtype, [&](auto t) { add_relu_forward_t<decltype(t)>(a, b, y); });
}

void grad_pass(const Tensor& src, const Tensor& dst, GradMode mode) {
  with_activation_type(src.dtype, [&](auto t) { grad_pass_t<decltype(t)>(src, dst, mode); });
}

// ---- Dropout ------------------------------------------------------------------------------------
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

template <class T>
void dropout_forward_t(const Tensor& x, float p, MaskKey key, const Tensor& y) {
  const float scale = keep_scale(p);
  const T* in = x.as<T>();
  T* out = y.as<T>();
  for_each(x.numel(), [=] __device__(int64_t i) {
    store(out, i, rng::uniform(key(), i) < p ? 0.0f : load(in, i) * scale);
  });
}

template <class T>
void dropout_backward_t(const Tensor& dy, float p, MaskKey key, const Tensor& dx,
                        GradMode dx_mode) {
  const float scale = keep_scale(p);
  const T* g = dy.as<T>();
  write_grad<T>(dx, dx_mode, [=] __device__(int64_t i) {
    return rng::uniform(key(), i) < p ? 0.0f : load(g, i) * scale;
  });
}

}  // namespace

void dropout_forward(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& y,
                     const Tensor& mask_index) {
  const MaskKey key = mask_key(seed, stream, mask_index);
  with_activation_type(x.dtype, [&](auto t) { dropout_forward_t<decltype(t)>(x, p, key, y); });
}

void dropout_backward(const Tensor& dy, float p, uint64_t seed, uint64_t stream, const Tensor& dx,
                      GradMode dx_mode, const Tensor& mask_index) {
  const MaskKey key = mask_key(seed, stream, mask_index);
  with_activation_type(dy.dtype,
                       [&](auto t) { dropout_backward_t<decltype(t)>(dy, p, key, dx, dx_mode); });
}

void count_up(const Tensor& counter) {
  int32_t* c = counter.i32();
  for_each(1,
           [=] __device__(int64_t) { *c = static_cast<int32_t>(static_cast<uint32_t>(*c) + 1u); });
}

}  // namespace psgd::cuda
