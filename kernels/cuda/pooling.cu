// Average and max pooling on CUDA (no padding), float32 or bf16 activations. Backward passes
// gather per input element from the windows that cover it (or, for max pooling over windows that
// tile the input, write per window), so no two threads write the same element. An element's
// plane, row and column come from fast divisions (kernels/fast_divide.h): 64-bit divisions would
// cost more than the pooling itself.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/fast_divide.h"

namespace psgd::cuda {
namespace {

struct PoolDims {
  int64_t planes, h, w, p, q;
  int k, s;
  FastDivisor h_div, w_div, p_div, q_div;
};

PoolDims dims_of(const Shape& x, ops::Pool2dGeometry g) {
  const Shape y = ops::pool2d_output_shape(x, g);
  PSGD_CHECK(x.numel() <= INT32_MAX, "pooling: ", x.str(), " has 2^31 elements or more");
  const auto divisor = [](int64_t v) { return FastDivisor(static_cast<uint32_t>(v)); };
  return {x[0] * x[1], x[2],          x[3],          y[2],          y[3],         g.kernel,
          g.stride,    divisor(x[2]), divisor(x[3]), divisor(y[2]), divisor(y[3])};
}

// Element e of planes of `rows` x `cols`: its plane, row and column.
struct PlaneIndex {
  int64_t plane, row, col;
};

__device__ PlaneIndex locate(int64_t e, const FastDivisor& rows, const FastDivisor& cols) {
  const uint32_t line = cols.divide(static_cast<uint32_t>(e));  // plane * rows + row
  const uint32_t plane = rows.divide(line);
  return {plane, line - plane * rows.divisor(), e - int64_t{line} * cols.divisor()};
}

// Row-major index within the plane of the first maximum of window (p, q), as the CPU.
template <class T>
__device__ int64_t argmax_in_window(const PoolDims& d, const T* plane, int64_t p, int64_t q) {
  int64_t best = p * d.s * d.w + q * d.s;
  float best_value = load(plane, best);
  for (int i = 0; i < d.k; ++i)
    for (int j = 0; j < d.k; ++j) {
      const int64_t idx = (p * d.s + i) * d.w + q * d.s + j;
      const float v = load(plane, idx);
      if (v > best_value || isnan(v)) {
        best = idx;
        best_value = v;
      }
      if (isnan(best_value)) return best;
    }
  return best;
}

// The windows [p0, p1) x [q0, q1) that cover input element (r, c); 32-bit divisions by the
// small stride.
__device__ void covering(const PoolDims& d, int64_t r, int64_t c, int64_t& p0, int64_t& p1,
                         int64_t& q0, int64_t& q1) {
  const int row = static_cast<int>(r), col = static_cast<int>(c);
  p0 = row < d.k ? 0 : (row - d.k) / d.s + 1;
  p1 = min(d.p, int64_t{row / d.s + 1});
  q0 = col < d.k ? 0 : (col - d.k) / d.s + 1;
  q1 = min(d.q, int64_t{col / d.s + 1});
}

// The ops for activations of element type T (float or bf16); the public functions dispatch.
template <class T>
void avg_pool_forward_t(const Tensor& x, ops::Pool2dGeometry g, const Tensor& y) {
  const PoolDims d = dims_of(x.shape, g);
  const T* in = x.as<T>();
  T* out = y.as<T>();
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
  for_each(y.numel(), [=] __device__(int64_t o) {
    const auto [plane, p, q] = locate(o, d.p_div, d.q_div);
    const T* src = in + plane * d.h * d.w;
    float sum = 0.0f;
    for (int i = 0; i < d.k; ++i)
      for (int j = 0; j < d.k; ++j) sum += load(src, (p * d.s + i) * d.w + q * d.s + j);
    store(out, o, sum * inv);
  });
}

template <class T>
void avg_pool_backward_t(const Tensor& dy, ops::Pool2dGeometry g, const Tensor& dx,
                         GradMode dx_mode) {
  const PoolDims d = dims_of(dx.shape, g);
  const T* gy = dy.as<T>();
  T* gx = dx.as<T>();
  const float inv = 1.0f / static_cast<float>(d.k * d.k);
  const bool accumulate = dx_mode == GradMode::Accumulate;
  for_each(dx.numel(), [=] __device__(int64_t e) {
    const auto [plane, r, c] = locate(e, d.h_div, d.w_div);
    int64_t p0, p1, q0, q1;
    covering(d, r, c, p0, p1, q0, q1);
    float sum = 0.0f;
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t q = q0; q < q1; ++q) sum += load(gy, (plane * d.p + p) * d.q + q) * inv;
    store(gx, e, accumulate ? load(gx, e) + sum : sum);
  });
}

template <class T>
void max_pool_forward_t(const Tensor& x, ops::Pool2dGeometry g, const Tensor& y) {
  const PoolDims d = dims_of(x.shape, g);
  const T* in = x.as<T>();
  T* out = y.as<T>();
  for_each(y.numel(), [=] __device__(int64_t o) {
    const auto [plane, p, q] = locate(o, d.p_div, d.q_div);
    const T* src = in + plane * d.h * d.w;
    out[o] = src[argmax_in_window(d, src, p, q)];
  });
}

template <class T>
void max_pool_backward_t(const Tensor& x, const Tensor& dy, ops::Pool2dGeometry g, const Tensor& dx,
                         GradMode dx_mode) {
  const PoolDims d = dims_of(x.shape, g);
  const T* in = x.as<T>();
  const T* gy = dy.as<T>();
  T* gx = dx.as<T>();
  const bool accumulate = dx_mode == GradMode::Accumulate;
  if (d.k == d.s && d.p * d.k == d.h && d.q * d.k == d.w) {
    // The windows tile the input (VGG's 2x2 pools): each window's thread finds its maximum once
    // and writes the whole window, where gathering would search every window k^2 times.
    for_each(dy.numel(), [=] __device__(int64_t o) {
      const auto [plane, p, q] = locate(o, d.p_div, d.q_div);
      const T* src = in + plane * d.h * d.w;
      T* dst = gx + plane * d.h * d.w;
      const int64_t best = argmax_in_window(d, src, p, q);
      for (int i = 0; i < d.k; ++i)
        for (int j = 0; j < d.k; ++j) {
          const int64_t idx = (p * d.s + i) * d.w + q * d.s + j;
          float sum = 0.0f;  // as the gather below sums, so that a -0 gradient lands as +0
          if (idx == best) sum += load(gy, o);
          store(dst, idx, accumulate ? load(dst, idx) + sum : sum);
        }
    });
    return;
  }
  for_each(dx.numel(), [=] __device__(int64_t e) {
    const auto [plane, r, c] = locate(e, d.h_div, d.w_div);
    const T* src = in + plane * d.h * d.w;
    int64_t p0, p1, q0, q1;
    covering(d, r, c, p0, p1, q0, q1);
    float sum = 0.0f;
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t q = q0; q < q1; ++q)
        if (argmax_in_window(d, src, p, q) == r * d.w + c)
          sum += load(gy, (plane * d.p + p) * d.q + q);
    store(gx, e, accumulate ? load(gx, e) + sum : sum);
  });
}

}  // namespace

void avg_pool_forward(const Tensor& x, ops::Pool2dGeometry g, const Tensor& y) {
  with_activation_type(x.dtype, [&](auto t) { avg_pool_forward_t<decltype(t)>(x, g, y); });
}

void avg_pool_backward(const Tensor& dy, ops::Pool2dGeometry g, const Tensor& dx,
                       GradMode dx_mode) {
  with_activation_type(dy.dtype,
                       [&](auto t) { avg_pool_backward_t<decltype(t)>(dy, g, dx, dx_mode); });
}

void max_pool_forward(const Tensor& x, ops::Pool2dGeometry g, const Tensor& y) {
  with_activation_type(x.dtype, [&](auto t) { max_pool_forward_t<decltype(t)>(x, g, y); });
}

void max_pool_backward(const Tensor& x, const Tensor& dy, ops::Pool2dGeometry g, const Tensor& dx,
                       GradMode dx_mode) {
  with_activation_type(x.dtype,
                       [&](auto t) { max_pool_backward_t<decltype(t)>(x, dy, g, dx, dx_mode); });
}

}  // namespace psgd::cuda
