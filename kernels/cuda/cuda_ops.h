// The CUDA twins of the CPU kernels in kernels/cpu/cpu_ops.h, same signatures. Callers go
// through psgd::ops, which validates and dispatches on the context's device. Only compiled with
// the CUDA backend; ops without a twin yet are refused on a CUDA context by the dispatcher.
#pragma once

#include "kernels/ops.h"

namespace psgd::cuda {

using ops::GradMode;

void relu_forward(const Tensor& x, const Tensor& y);
void relu_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, GradMode dx_mode);
void add_forward(const Tensor& a, const Tensor& b, const Tensor& y);
void grad_pass(const Tensor& src, const Tensor& dst, GradMode mode);
void dropout_forward(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& y);
void dropout_backward(const Tensor& dy, float p, uint64_t seed, uint64_t stream,
                      const Tensor& dx, GradMode dx_mode);

void quantize_weights(const Tensor& x, float delta, int levels, const Tensor& y);
void quantize_activations(const Tensor& x, float delta, int levels, const Tensor& y);

}  // namespace psgd::cuda
