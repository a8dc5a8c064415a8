// The CPU implementations behind kernels/ops.h. Callers go through psgd::ops, which has already
// validated shapes, devices and arguments; these functions assume valid input.
#pragma once

#include "kernels/ops.h"

namespace psgd::cpu {

using ops::Conv2dGeometry;
using ops::GradMode;
using ops::Pool2dGeometry;

void cast(const Tensor& src, const Tensor& dst);

// Convolutions and linear layers compute in float32; bf16 activations are widened into float32
// copies in the workspace (kernels/cpu/staging.h), which these sizes include.
int64_t conv2d_workspace_floats(int threads, DType activations, const Shape& x, const Shape& w,
                                Conv2dGeometry g);
void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, Conv2dGeometry g,
                    const Tensor& y);
void conv2d_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw);

void batch_norm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var,
                              ops::BatchNormParams p, const Tensor& y, const Tensor& saved_mean,
                              const Tensor& saved_invstd, const Tensor& residual);
void batch_norm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             ops::BatchNormParams p, const Tensor& y, const Tensor& residual);
void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                         const ops::ReluMaskSource& relu);
void batch_norm_moments(const Tensor& x, const Tensor& shift, const Tensor& moments);
void batch_norm_stats(const Tensor& shift, const Tensor& moments, int64_t count,
                      ops::BatchNormParams p, const Tensor& running_mean, const Tensor& running_var,
                      const Tensor& mean, const Tensor& invstd);
void batch_norm_normalize(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& mean, const Tensor& invstd, const Tensor& y);
void batch_norm_backward_reduce(const Tensor& x, const Tensor& dy, const Tensor& mean,
                                const Tensor& invstd, const Tensor& sums, const Tensor& dgamma,
                                const Tensor& dbeta);
void batch_norm_backward_input(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                               int64_t count, const Tensor& dx, GradMode dx_mode);

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

void avg_pool_forward(const Tensor& x, Pool2dGeometry g, const Tensor& y);
void avg_pool_backward(const Tensor& dy, Pool2dGeometry g, const Tensor& dx, GradMode dx_mode);
void max_pool_forward(const Tensor& x, Pool2dGeometry g, const Tensor& y);
void max_pool_backward(const Tensor& x, const Tensor& dy, Pool2dGeometry g, const Tensor& dx,
                       GradMode dx_mode);

int64_t linear_workspace_floats(const Context& ctx, const Shape& x, const Shape& w);
void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y);
void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, GradMode dx_mode, const Tensor& dw, const Tensor& db);

void softmax_cross_entropy(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                           const Tensor& dlogits);
int64_t topk_correct(const Tensor& logits, const Tensor& labels, int k);
void accumulate_metrics(const Tensor& logits, const Tensor& labels, const Tensor& loss,
                        const Tensor& totals);

void tensor_min_max(const Tensor& x, const Tensor& out);
void quantize_weights(const Tensor& x, float delta, int levels, const Tensor& y);
void quantize_activations(const Tensor& x, float delta, int levels, const Tensor& y);

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

}  // namespace psgd::cpu
