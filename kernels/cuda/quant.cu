// Quantize-dequantize on CUDA, with the element arithmetic of kernels/quant_math.h.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/quant_math.h"

namespace psgd::cuda {

void quantize_weights(const Tensor& x, float delta, int levels, const Tensor& y) {
  const float* in = x.f32();
  float* out = y.f32();
  const float l = static_cast<float>(levels);
  for_each(x.numel(), [=] __device__(int64_t i) { out[i] = quant::quantize_weight(in[i], delta, l); });
}

void quantize_activations(const Tensor& x, float delta, int levels, const Tensor& y) {
  const float* in = x.f32();
  float* out = y.f32();
  const float l = static_cast<float>(levels);
  for_each(x.numel(), [=] __device__(int64_t i) {
    out[i] = quant::quantize_activation(in[i], delta, l);
  });
}

}  // namespace psgd::cuda
