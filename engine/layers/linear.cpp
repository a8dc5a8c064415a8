#include "engine/layers/linear.h"

namespace psgd {

Linear::Linear(ParamStore& params, const std::string& name, int in_features, int out_features)
    : Layer(name),
      params_(params),
      in_(in_features),
      out_(out_features),
      weight_(params.add(name + ".weight", Shape{out_features, in_features},
                         ParamRole::LinearWeight)),
      bias_(params.add(name + ".bias", Shape{out_features}, ParamRole::LinearBias)) {}

std::string Linear::describe() const {
  return name_ + ": linear " + std::to_string(in_) + "->" + std::to_string(out_);
}

Shape Linear::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  PSGD_CHECK(x.rank() >= 2 && x.numel() == x[0] * in_, name_, ": expects ", in_,
             " features per sample, got input ", x.str());
  return Shape{x[0], out_};
}

int64_t Linear::workspace_floats(const Context& ctx, std::span<const Shape> inputs) const {
  return ops::linear_workspace_floats(ctx, inputs[0], params_.entry(weight_).shape);
}

void Linear::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode) {
  ops::linear_forward(ctx, x[0], params_.value(weight_), params_.value(bias_), y);
}

void Linear::backward(Context& ctx, std::span<const Tensor> x, const Tensor&, const Tensor& dy,
                      std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  ops::linear_backward(ctx, x[0], params_.value(weight_), dy, dx[0], dx_modes[0],
                       params_.grad(weight_), params_.grad(bias_));
}

}  // namespace psgd
