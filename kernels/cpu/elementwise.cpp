// Elementwise ops on the CPU: casts, ReLU, add, gradient routing and dropout, for float32 and
// bf16 activations. Plain loops over restrict-qualified pointers, so that the compiler
// vectorises them.
#include <cstring>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/rng.h"

namespace psgd::cpu {
namespace {

// out[i] = value, or out[i] += value: widened, added and rounded once for bf16.
template <bool kAccumulate, class T>
inline void store_grad(T* out, int64_t i, float value) {
  if constexpr (kAccumulate)
    store(out, i, load(out, i) + value);
  else
    store(out, i, value);
}

// dx[i] = value(i) (or += with Accumulate) over every element, in parallel. `value` must be
// simple enough to vectorise, and may read dx[i] itself (a ReLU in place): no pointer here is
// restrict-qualified, and `omp simd` vectorises regardless.
template <class T, class F>
void write_grad(const Tensor& dx, GradMode mode, F&& value) {
  T* out = dx.as<T>();
  const int64_t n = dx.numel();
  if (mode == GradMode::Accumulate) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) store_grad<true>(out, i, value(i));
  } else {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) store_grad<false>(out, i, value(i));
  }
}

// y[i] = value(i) over every element, in parallel; value(i) may read y[i] (a ReLU in place).
template <class T, class F>
void write_values(const Tensor& y, F&& value) {
  T* out = y.as<T>();
  const int64_t n = y.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) store(out, i, value(i));
}

float keep_scale(float p) {
  return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
}

uint64_t mask_key(uint64_t seed, uint64_t stream, const Tensor& mask_index) {
  const uint32_t index = mask_index.defined() ? static_cast<uint32_t>(mask_index.i32()[0]) : 0u;
  return rng::stream_key(seed, stream | index);
}

float relu(float v) {
  return v > 0.0f ? v : 0.0f;
}

}  // namespace

void cast(const Tensor& src, const Tensor& dst) {
  if (src.dtype == dst.dtype) {
    std::memcpy(dst.data, src.data, src.bytes());
  } else if (src.dtype == DType::F32) {
    const float* __restrict in = src.f32();
    write_values<bf16>(dst, [=](int64_t i) { return in[i]; });
  } else {
    const bf16* __restrict in = src.bf16s();
    write_values<float>(dst, [=](int64_t i) { return load(in, i); });
  }
}

void relu_forward(const Tensor& x, const Tensor& y) {
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    const T* in = x.as<T>();
    write_values<T>(y, [=](int64_t i) { return relu(load(in, i)); });
  });
}

void relu_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, GradMode dx_mode) {
  with_activation_type(y.dtype, [&](auto t) {
    using T = decltype(t);
    const T* out = y.as<T>();
    const T* g = dy.as<T>();
    // Both loads unconditional: a select vectorises, a branch on the sign mispredicts half the
    // time.
    write_grad<T>(dx, dx_mode, [=](int64_t i) {
      const float gradient = load(g, i);
      return load(out, i) > 0.0f ? gradient : 0.0f;
    });
  });
}

void add_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  with_activation_type(a.dtype, [&](auto t) {
    using T = decltype(t);
    const T* pa = a.as<T>();
    const T* pb = b.as<T>();
    write_values<T>(y, [=](int64_t i) { return load(pa, i) + load(pb, i); });
  });
}

void add_relu_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  with_activation_type(a.dtype, [&](auto t) {
    using T = decltype(t);
    const T* pa = a.as<T>();
    const T* pb = b.as<T>();
    write_values<T>(y, [=](int64_t i) { return relu(load(pa, i) + load(pb, i)); });
  });
}

void grad_pass(const Tensor& src, const Tensor& dst, GradMode mode) {
  with_activation_type(src.dtype, [&](auto t) {
    using T = decltype(t);
    const T* g = src.as<T>();  // may be dst: a residual join's gradient onto itself
    write_grad<T>(dst, mode, [=](int64_t i) { return load(g, i); });
  });
}

void dropout_forward(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& y,
                     const Tensor& mask_index) {
  const uint64_t key = mask_key(seed, stream, mask_index);
  const float scale = keep_scale(p);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    const T* __restrict in = x.as<T>();
    write_values<T>(
        y, [=](int64_t i) { return rng::uniform(key, i) < p ? 0.0f : load(in, i) * scale; });
  });
}

void dropout_backward(const Tensor& dy, float p, uint64_t seed, uint64_t stream, const Tensor& dx,
                      GradMode dx_mode, const Tensor& mask_index) {
  const uint64_t key = mask_key(seed, stream, mask_index);
  const float scale = keep_scale(p);
  with_activation_type(dy.dtype, [&](auto t) {
    using T = decltype(t);
    const T* __restrict g = dy.as<T>();
    write_grad<T>(dx, dx_mode,
                  [=](int64_t i) { return rng::uniform(key, i) < p ? 0.0f : load(g, i) * scale; });
  });
}

void count_up(const Tensor& counter) {
  int32_t& c = counter.i32()[0];
  c = static_cast<int32_t>(static_cast<uint32_t>(c) + 1u);
}

}  // namespace psgd::cpu
