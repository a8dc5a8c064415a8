#include "engine/layers/conv2d.h"

#include <sstream>

namespace psgd {

Conv2d::Conv2d(ParamStore& params, const std::string& name, int in_channels, int out_channels,
               int kernel, int stride, int pad)
    : Layer(name),
      params_(params),
      weight_(params.add(name + ".weight", Shape{out_channels, in_channels, kernel, kernel},
                         ParamRole::ConvWeight)),
      geometry_{stride, pad} {}

std::string Conv2d::describe() const {
  const Shape& w = params_.entry(weight_).shape;
  std::ostringstream s;
  s << name_ << ": conv2d " << w[1] << "->" << w[0] << " " << w[2] << "x" << w[3] << " stride "
    << geometry_.stride << " pad " << geometry_.pad;
  return s.str();
}

Shape Conv2d::output_shape(std::span<const Shape> inputs) const {
  return ops::conv2d_output_shape(inputs[0], params_.entry(weight_).shape, geometry_);
}

int64_t Conv2d::workspace_floats(const Context& ctx, std::span<const Shape> inputs) const {
  return ops::conv2d_workspace_floats(ctx, inputs[0], params_.entry(weight_).shape, geometry_);
}

void Conv2d::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode) {
  ops::conv2d_forward(ctx, x[0], params_.value(weight_), geometry_, y);
}

void Conv2d::backward(Context& ctx, std::span<const Tensor> x, const Tensor&, const Tensor& dy,
                      std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  ops::conv2d_backward(ctx, x[0], params_.value(weight_), dy, geometry_, dx[0], dx_modes[0],
                       params_.grad(weight_));
}

}  // namespace psgd
