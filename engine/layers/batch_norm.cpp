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

void BatchNorm::plan(Device device, std::span<const Shape>) {
  if (saved_.bytes() == 0 || saved_.device() != device)
    saved_ = DeviceBuffer(device, 2 * channels_ * sizeof(float));
}

void BatchNorm::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) {
  const Tensor gamma = params_.value(weight_), beta = params_.value(bias_);
  const Tensor mean = params_.value(running_mean_), var = params_.value(running_var_);
  if (mode == Mode::Eval) {
    ops::batch_norm_forward_eval(ctx, x[0], gamma, beta, mean, var, {}, y);
    return;
  }
  ops::batch_norm_forward_train(ctx, x[0], gamma, beta, mean, var, {}, y,
                                saved_.f32(0, Shape{channels_}),
                                saved_.f32(channels_, Shape{channels_}));
  ++params_.counter(batches_tracked_);
}

void BatchNorm::backward(Context& ctx, std::span<const Tensor> x, const Tensor&, const Tensor& dy,
                         std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  ops::batch_norm_backward(ctx, x[0], dy, params_.value(weight_), saved_.f32(0, Shape{channels_}),
                           saved_.f32(channels_, Shape{channels_}), dx[0], dx_modes[0],
                           params_.grad(weight_), params_.grad(bias_));
}

}  // namespace psgd
