#include "engine/layers/batch_norm.h"

namespace psgd {

BatchNorm::BatchNorm(ParamStore& params, const std::string& name, int channels)
    : Layer(name),
      params_(params),
      channels_(channels),
      weight_(params.add(name + ".weight", Shape{channels}, ParamRole::BnWeight)),
      bias_(params.add(name + ".bias", Shape{channels}, ParamRole::BnBias)),
      running_mean_(params.add(name + ".running_mean", Shape{channels}, ParamRole::BnRunningMean)),
      running_var_(params.add(name + ".running_var", Shape{channels}, ParamRole::BnRunningVar)),
      batches_tracked_(
          params.add(name + ".num_batches_tracked", Shape{}, ParamRole::BnBatchesTracked)) {}

std::string BatchNorm::describe() const {
  return name_ + ": batch_norm " + std::to_string(channels_);
}

Shape BatchNorm::output_shape(std::span<const Shape> inputs) const {
  PSGD_CHECK(inputs[0].rank() >= 2 && inputs[0][1] == channels_, name_, ": expects ", channels_,
             " channels, got input ", inputs[0].str());
  return inputs[0];
}

int64_t BatchNorm::workspace_floats(const Context& ctx, std::span<const Shape> inputs) const {
  return ops::batch_norm_workspace_floats(ctx, inputs[0]);
}

void BatchNorm::plan(Device device, std::span<const Shape>) {
  if (saved_.bytes() == 0 || saved_.device() != device)
    saved_ = DeviceBuffer(device, 2 * channels_ * (sizeof(float) + sizeof(double)));
}

void BatchNorm::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) {
  forward_with(ctx, x[0], y, mode, false);
}

void BatchNorm::forward_relu(Context& ctx, std::span<const Tensor> x, const Tensor& relu_y,
                             Mode mode) {
  forward_with(ctx, x[0], relu_y, mode, true);
}

void BatchNorm::forward_add_relu(Context& ctx, std::span<const Tensor> x, const Tensor& residual,
                                 const Tensor& relu_y, Mode mode) {
  forward_with(ctx, x[0], relu_y, mode, true, residual);
}

void BatchNorm::forward_with(Context& ctx, const Tensor& x, const Tensor& y, Mode mode, bool relu,
                             const Tensor& residual) {
  const Tensor gamma = params_.value(weight_), beta = params_.value(bias_);
  const Tensor mean = params_.value(running_mean_), var = params_.value(running_var_);
  const ops::BatchNormParams p{.relu = relu};
  if (mode == Mode::Eval) {
    ops::batch_norm_forward_eval(ctx, x, gamma, beta, mean, var, p, y, residual);
    return;
  }
  PSGD_CHECK(!(relu && sync_), name_, ": synchronised BN keeps its ReLU separate");
  residual_fused_ = residual.defined();
  if (sync_)
    forward_synchronised(ctx, x, y);
  else
    ops::batch_norm_forward_train(ctx, x, gamma, beta, mean, var, p, y, saved_mean(),
                                  saved_invstd(), residual);
  ++params_.counter(batches_tracked_);
}

void BatchNorm::forward_synchronised(Context& ctx, const Tensor& x, const Tensor& y) {
  const Tensor running_mean = params_.value(running_mean_);
  // The running mean is the same on every rank and near the batch mean: a good shift.
  ops::batch_norm_moments(ctx, x, running_mean, exchange());
  sync_->allreduce_sum(ctx, exchange());
  const int64_t count = x.numel() / channels_ * sync_->world();
  ops::batch_norm_stats(ctx, running_mean, exchange(), count, {}, running_mean,
                        params_.value(running_var_), saved_mean(), saved_invstd());
  ops::batch_norm_normalize(ctx, x, params_.value(weight_), params_.value(bias_), saved_mean(),
                            saved_invstd(), y);
}

void BatchNorm::backward(Context& ctx, std::span<const Tensor> x, const Tensor&, const Tensor& dy,
                         std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  if (sync_) {
    backward_synchronised(ctx, x[0], dy, dx[0], dx_modes[0]);
    return;
  }
  ops::batch_norm_backward(ctx, x[0], dy, params_.value(weight_), saved_mean(), saved_invstd(),
                           dx[0], dx_modes[0], params_.grad(weight_), params_.grad(bias_));
}

void BatchNorm::backward_relu(Context& ctx, std::span<const Tensor> x, const Tensor& relu_y,
                              const Tensor& relu_dy, std::span<const Tensor> dx,
                              std::span<const ops::GradMode> dx_modes) {
  const Tensor gamma = params_.value(weight_), dgamma = params_.grad(weight_),
               dbeta = params_.grad(bias_);
  if (!residual_fused_) {
    ops::batch_norm_backward(ctx, x[0], relu_dy, gamma, saved_mean(), saved_invstd(), dx[0],
                             dx_modes[0], dgamma, dbeta, {.beta = params_.value(bias_)});
  } else if (saved_.device() == Device::CUDA) {
    ops::batch_norm_backward(ctx, x[0], relu_dy, gamma, saved_mean(), saved_invstd(), dx[0],
                             dx_modes[0], dgamma, dbeta, {.output = relu_y});
  } else {
    // Nothing reads the ReLU's output gradient after this layer (masking it twice, where the
    // fused join masks it for the residual too, changes nothing).
    ops::relu_backward(ctx, relu_y, relu_dy, relu_dy, ops::GradMode::Overwrite);
    ops::batch_norm_backward(ctx, x[0], relu_dy, gamma, saved_mean(), saved_invstd(), dx[0],
                             dx_modes[0], dgamma, dbeta);
  }
}

void BatchNorm::backward_synchronised(Context& ctx, const Tensor& x, const Tensor& dy,
                                      const Tensor& dx, ops::GradMode dx_mode) {
  // This rank's dbeta = sum dy and dgamma = sum dy * xhat are its share of the parameter
  // gradients, which the gradient all-reduce averages; the input gradient needs their sums.
  const Tensor sums = exchange();
  ops::batch_norm_backward_reduce(ctx, x, dy, saved_mean(), saved_invstd(), sums,
                                  params_.grad(weight_), params_.grad(bias_));
  if (!dx.defined()) return;
  sync_->allreduce_sum(ctx, sums);
  ops::batch_norm_backward_input(ctx, x, dy, params_.value(weight_), saved_mean(), saved_invstd(),
                                 sums, x.numel() / channels_ * sync_->world(), dx, dx_mode);
}

}  // namespace psgd
