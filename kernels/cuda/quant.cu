// Quantize-dequantize on CUDA, with the element arithmetic of kernels/quant_math.h.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.h"
#include "kernels/quant_math.h"

namespace psgd::cuda {
namespace {

// min and max of n values by one block, in a fixed order.
template <class T>
__global__ void min_max_kernel(const T* x, int64_t n, float* out) {
  await_prior_grids();
  float lo, hi;
  block_min_max(x, n, lo, hi);
  if (threadIdx.x == 0) {
    out[0] = lo;
    out[1] = hi;
  }
}

template <class T>
void quantize_activations_t(const Tensor& x, float delta, int levels, const Tensor& y) {
  const T* in = x.as<T>();
  T* out = y.as<T>();
  const float l = static_cast<float>(levels);
  for_each(x.numel(), [=] __device__(int64_t i) {
    store(out, i, quant::quantize_activation(load(in, i), delta, l));
  });
}

}  // namespace

void tensor_min_max(const Tensor& x, const Tensor& out) {
  with_activation_type(x.dtype, [&](auto t) {
    PSGD_LAUNCH(min_max_kernel<decltype(t)>, 1, kThreads)
    (x.as<decltype(t)>(), x.numel(), out.f32());
  });
  CUDA_CHECK_LAUNCH();
}

void quantize_weights(const Tensor& x, float delta, int levels, const Tensor& y) {
  const float* in = x.f32();
  float* out = y.f32();
  const float l = static_cast<float>(levels);
  for_each(x.numel(),
           [=] __device__(int64_t i) { out[i] = quant::quantize_weight(in[i], delta, l); });
}

void quantize_activations(const Tensor& x, float delta, int levels, const Tensor& y) {
  with_activation_type(x.dtype,
                       [&](auto t) { quantize_activations_t<decltype(t)>(x, delta, levels, y); });
}

}  // namespace psgd::cuda
