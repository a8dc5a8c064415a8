// The CUDA twins of the CPU kernels in kernels/cpu/cpu_ops.h, same signatures. Callers go
// through psgd::ops, which validates and dispatches on the context's device. Only compiled with
// the CUDA backend.
#pragma once

#include <string>

#include "kernels/ops.h"

namespace psgd::cuda {

using ops::GradMode;

void cast(const Tensor& src, const Tensor& dst);

int64_t conv2d_workspace_floats(const Context& ctx, const Shape& x, const Shape& w,
                                ops::Conv2dGeometry g);
void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, ops::Conv2dGeometry g,
                    const Tensor& y);
void conv2d_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     ops::Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw);
// What runs each direction of the shape's convolution ("forward tensor-core, backward-data cudnn,
// backward-filter tensor-core"), planning it if needed: for logs and tests.
std::string conv2d_routes(const Context& ctx, const Shape& x, const Shape& w,
                          ops::Conv2dGeometry g);
// psgd's direct 3x3 convolution (stride 1, padding 1, at most 64 channels in and out), which
// conv2d races against cuDNN (conv2d_direct.cu). w: the filter (K, C, 3, 3) in the activations'
// element type.
bool conv2d_direct_supported(const Shape& w, ops::Conv2dGeometry g);
void conv2d_direct_forward(const Tensor& x, const void* w, const Shape& w_shape, const Tensor& y);
void conv2d_direct_backward_data(const Tensor& dy, const void* w, const Shape& w_shape,
                                 GradMode dx_mode, const Tensor& dx);
// psgd's 3x3 convolution on tensor cores (padding 1, stride 1 or 2 on even sizes; TF32, so only
// where tensor cores are allowed), which conv2d races against cuDNN (conv2d_tensor_core.cu);
// arguments as the direct kernel's, with the convolution's stride.
// Whether `device` has the kernels' TF32 mma.sync (compute capability 8.0 on).
bool conv2d_tensor_core_available(int device);
bool conv2d_tensor_core_supported(const Shape& x, const Shape& w, ops::Conv2dGeometry g);
bool conv2d_tensor_core_data_supported(const Shape& x, const Shape& w, ops::Conv2dGeometry g);
void conv2d_tensor_core_forward(const Tensor& x, const void* w, const Shape& w_shape, int stride,
                                const Tensor& y);
void conv2d_tensor_core_backward_data(const Tensor& dy, const void* w, const Shape& w_shape,
                                      int stride, GradMode dx_mode, const Tensor& dx);
// Its filter gradient (output widths multiples of 8; conv2d_tensor_core_filter.cu): dw (float32,
// overwritten) through `partials`, conv2d_tensor_core_filter_workspace_floats float32 scratch.
bool conv2d_tensor_core_filter_supported(const Shape& x, const Shape& w, ops::Conv2dGeometry g);
int64_t conv2d_tensor_core_filter_workspace_floats(const Shape& x, const Shape& w, int stride);
void conv2d_tensor_core_backward_filter(const Tensor& x, const Tensor& dy, const Shape& w_shape,
                                        int stride, const Tensor& partials, const Tensor& dw);
// x (N, in) as a matrix; as cpu::linear_*.
int64_t linear_workspace_floats(const Context& ctx, const Shape& x, const Shape& w);
void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y);
void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, GradMode dx_mode, const Tensor& dw, const Tensor& db);

void relu_forward(const Tensor& x, const Tensor& y);
void relu_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, GradMode dx_mode);
void add_forward(const Tensor& a, const Tensor& b, const Tensor& y);
void add_relu_forward(const Tensor& a, const Tensor& b, const Tensor& y);
void grad_pass(const Tensor& src, const Tensor& dst, GradMode mode);
void dropout_forward(const Tensor& x, float p, uint64_t seed, uint64_t stream, const Tensor& y,
                     const Tensor& mask_index);
void dropout_backward(const Tensor& dy, float p, uint64_t seed, uint64_t stream, const Tensor& dx,
                      GradMode dx_mode, const Tensor& mask_index);
void count_up(const Tensor& counter);

void quantize_weights(const Tensor& x, float delta, int levels, const Tensor& y);
void quantize_activations(const Tensor& x, float delta, int levels, const Tensor& y);
void tensor_min_max(const Tensor& x, const Tensor& out);

void avg_pool_forward(const Tensor& x, ops::Pool2dGeometry g, const Tensor& y);
void avg_pool_backward(const Tensor& dy, ops::Pool2dGeometry g, const Tensor& dx, GradMode dx_mode);
void max_pool_forward(const Tensor& x, ops::Pool2dGeometry g, const Tensor& y);
void max_pool_backward(const Tensor& x, const Tensor& dy, ops::Pool2dGeometry g, const Tensor& dx,
                       GradMode dx_mode);

// Batch normalisation: as cpu::batch_norm_*, with scratch from the context's workspace
// (batch_norm_workspace_floats).
int64_t batch_norm_workspace_floats(const Shape& x);
void batch_norm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, ops::BatchNormParams p, const Tensor& y,
                              const Tensor& saved_mean, const Tensor& saved_invstd,
                              const Tensor& residual);
void batch_norm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             ops::BatchNormParams p, const Tensor& y, const Tensor& residual);
void batch_norm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                         const ops::ReluMaskSource& relu);
void batch_norm_moments(Context& ctx, const Tensor& x, const Tensor& shift, const Tensor& moments);
void batch_norm_stats(const Tensor& shift, const Tensor& moments, int64_t count,
                      ops::BatchNormParams p, const Tensor& running_mean, const Tensor& running_var,
                      const Tensor& mean, const Tensor& invstd);
void batch_norm_normalize(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& mean, const Tensor& invstd, const Tensor& y);
void batch_norm_backward_reduce(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& mean,
                                const Tensor& invstd, const Tensor& sums, const Tensor& dgamma,
                                const Tensor& dbeta);
void batch_norm_backward_input(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                               int64_t count, const Tensor& dx, GradMode dx_mode);

void softmax_cross_entropy(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                           const Tensor& dlogits);
int64_t topk_correct(const Tensor& logits, const Tensor& labels, int k);
void accumulate_metrics(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                        const Tensor& totals);

void update_weight_ranges(const Tensor& weights, const Tensor& segments, const Tensor& ranges,
                          const Tensor& partials, bool first);
void psgd_sgd_step(const Tensor& weights, const Tensor& grads, const Tensor& momentum,
                   const Tensor& segments, const Tensor& ranges, const Tensor& hyper,
                   ops::SgdStep h);
void psgd_adam_step(const Tensor& weights, const Tensor& grads, const Tensor& m, const Tensor& v,
                    const Tensor& segments, const Tensor& ranges, const Tensor& hyper,
                    ops::AdamStep h);
void set_step_values(const Tensor& hyper, const Tensor& steps, float lr, double steps_done);
void adam_advance(const Tensor& hyper, const Tensor& steps, double beta1, double beta2);

}  // namespace psgd::cuda
