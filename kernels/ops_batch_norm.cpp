// Validation and device dispatch for batch normalisation (kernels/ops.h), whole and in the
// stages of synchronised BN.
#include "kernels/ops_dispatch.h"

// The CUDA twins take the context too, for their scratch in its workspace.
#ifdef PSGD_WITH_CUDA
#define PSGD_DISPATCH_BN(ctx, op, ...) \
  ((ctx).device() == Device::CUDA ? cuda::op(ctx, __VA_ARGS__) : cpu::op(__VA_ARGS__))
#else
#define PSGD_DISPATCH_BN(ctx, op, ...) cpu::op(__VA_ARGS__)
#endif

namespace psgd::ops {
namespace {
Shape channel_shape(const Tensor& x) {
  return Shape{x.shape[1]};
}
}  // namespace

// ---- Batch normalisation ----------------------------------------------------------------------
int64_t batch_norm_workspace_floats(const Context& ctx, const Shape& x) {
  PSGD_CHECK(x.rank() == 2 || x.rank() == 4, "batch norm: input must be 2-D or 4-D, got ", x.str());
#ifdef PSGD_WITH_CUDA
  if (ctx.device() == Device::CUDA) return cuda::batch_norm_workspace_floats(x);
#endif
  return 0;
}

namespace {
void check_batch_norm(const char* op, const Tensor& x, std::initializer_list<const Tensor*> per_c) {
  PSGD_CHECK(x.shape.rank() == 2 || x.shape.rank() == 4, op, ": input must be 2-D or 4-D, got ",
             x.shape.str());
  for (const Tensor* t : per_c) check_shape(op, "a per-channel tensor", *t, channel_shape(x));
}
}  // namespace

void batch_norm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, BatchNormParams p, const Tensor& y,
                              const Tensor& saved_mean, const Tensor& saved_invstd,
                              const Tensor& residual) {
  const char* op = "batch_norm_forward_train";
  check_devices(
      ctx, op,
      {&x, &gamma, &beta, &running_mean, &running_var, &y, &saved_mean, &saved_invstd, &residual});
  check_batch_norm(op, x, {&gamma, &beta, &running_mean, &running_var, &saved_mean, &saved_invstd});
  check_activations(op, {&x, &y, &residual});
  check_float32(op, {&gamma, &beta, &running_mean, &running_var, &saved_mean, &saved_invstd});
  check_same_shape(op, x, y);
  if (residual.defined()) check_same_shape(op, x, residual);
  PSGD_CHECK(x.numel() / x.shape[1] > 1, op,
             ": training needs more than one value per channel, got input ", x.shape.str());
  PSGD_DISPATCH_BN(ctx, batch_norm_forward_train, x, gamma, beta, running_mean, running_var, p, y,
                   saved_mean, saved_invstd, residual);
}

void batch_norm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             BatchNormParams p, const Tensor& y, const Tensor& residual) {
  const char* op = "batch_norm_forward_eval";
  check_devices(ctx, op, {&x, &gamma, &beta, &running_mean, &running_var, &y, &residual});
  check_batch_norm(op, x, {&gamma, &beta, &running_mean, &running_var});
  check_activations(op, {&x, &y, &residual});
  check_float32(op, {&gamma, &beta, &running_mean, &running_var});
  check_same_shape(op, x, y);
  if (residual.defined()) check_same_shape(op, x, residual);
  PSGD_DISPATCH_BN(ctx, batch_norm_forward_eval, x, gamma, beta, running_mean, running_var, p, y,
                   residual);
}

void batch_norm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                         const ReluMaskSource& relu) {
  const char* op = "batch_norm_backward";
  check_devices(ctx, op,
                {&x, &dy, &gamma, &saved_mean, &saved_invstd, &dx, &dgamma, &dbeta, &relu.output,
                 &relu.beta});
  check_batch_norm(op, x, {&gamma, &saved_mean, &saved_invstd, &dgamma, &dbeta});
  check_activations(op, {&x, &dy, &dx, &relu.output});
  check_float32(op, {&gamma, &saved_mean, &saved_invstd, &dgamma, &dbeta});
  check_same_shape(op, x, dy);
  if (dx.defined()) check_same_shape(op, x, dx);
  if (relu.output.defined()) check_same_shape(op, x, relu.output);
  if (relu.beta.defined()) {
    PSGD_CHECK(!relu.output.defined(), op,
               ": the ReLU's mask comes from its output or from beta, not both");
    check_batch_norm(op, x, {&relu.beta});
    check_float32(op, {&relu.beta});
  }
  PSGD_DISPATCH_BN(ctx, batch_norm_backward, x, dy, gamma, saved_mean, saved_invstd, dx, dx_mode,
                   dgamma, dbeta, relu);
}

namespace {
Shape moments_shape(const Tensor& x) {
  return Shape{2, x.shape[1]};
}

void check_sums(const char* op, const Tensor& sums, const Shape& shape) {
  check_shape(op, "sums", sums, shape);
  PSGD_CHECK(sums.dtype == DType::F64, op, ": the sums must be float64");
}
}  // namespace

void batch_norm_moments(Context& ctx, const Tensor& x, const Tensor& shift, const Tensor& moments) {
  const char* op = "batch_norm_moments";
  check_devices(ctx, op, {&x, &shift, &moments});
  check_batch_norm(op, x, {&shift});
  check_activations(op, {&x});
  check_float32(op, {&shift});
  check_sums(op, moments, moments_shape(x));
  PSGD_DISPATCH_BN(ctx, batch_norm_moments, x, shift, moments);
}

void batch_norm_stats(Context& ctx, const Tensor& shift, const Tensor& moments, int64_t count,
                      BatchNormParams p, const Tensor& running_mean, const Tensor& running_var,
                      const Tensor& mean, const Tensor& invstd) {
  const char* op = "batch_norm_stats";
  check_devices(ctx, op, {&shift, &moments, &running_mean, &running_var, &mean, &invstd});
  check_rank(op, "shift", shift, 1);
  for (const Tensor* t : {&running_mean, &running_var, &mean, &invstd})
    check_shape(op, "a per-channel tensor", *t, shift.shape);
  check_sums(op, moments, Shape{2, shift.shape[0]});
  PSGD_CHECK(count > 1, op, ": training needs more than one value per channel, got ", count);
  PSGD_DISPATCH(ctx, batch_norm_stats, shift, moments, count, p, running_mean, running_var, mean,
                invstd);
}

void batch_norm_normalize(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& mean, const Tensor& invstd, const Tensor& y) {
  const char* op = "batch_norm_normalize";
  check_devices(ctx, op, {&x, &gamma, &beta, &mean, &invstd, &y});
  check_batch_norm(op, x, {&gamma, &beta, &mean, &invstd});
  check_activations(op, {&x, &y});
  check_float32(op, {&gamma, &beta, &mean, &invstd});
  check_same_shape(op, x, y);
  PSGD_DISPATCH_BN(ctx, batch_norm_normalize, x, gamma, beta, mean, invstd, y);
}

void batch_norm_backward_reduce(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& mean,
                                const Tensor& invstd, const Tensor& sums, const Tensor& dgamma,
                                const Tensor& dbeta) {
  const char* op = "batch_norm_backward_reduce";
  check_devices(ctx, op, {&x, &dy, &mean, &invstd, &sums, &dgamma, &dbeta});
  check_batch_norm(op, x, {&mean, &invstd, &dgamma, &dbeta});
  check_activations(op, {&x, &dy});
  check_float32(op, {&mean, &invstd, &dgamma, &dbeta});
  check_sums(op, sums, moments_shape(x));
  check_same_shape(op, x, dy);
  PSGD_DISPATCH_BN(ctx, batch_norm_backward_reduce, x, dy, mean, invstd, sums, dgamma, dbeta);
}

void batch_norm_backward_input(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                               int64_t count, const Tensor& dx, GradMode dx_mode) {
  const char* op = "batch_norm_backward_input";
  check_devices(ctx, op, {&x, &dy, &gamma, &mean, &invstd, &sums, &dx});
  check_batch_norm(op, x, {&gamma, &mean, &invstd});
  check_activations(op, {&x, &dy, &dx});
  check_float32(op, {&gamma, &mean, &invstd});
  check_sums(op, sums, moments_shape(x));
  check_same_shape(op, x, dy);
  check_same_shape(op, x, dx);
  PSGD_CHECK(count >= x.numel() / x.shape[1], op, ": ", count,
             " values per channel is fewer than this rank holds");
  PSGD_DISPATCH_BN(ctx, batch_norm_backward_input, x, dy, gamma, mean, invstd, sums, count, dx,
                   dx_mode);
}

}  // namespace psgd::ops
