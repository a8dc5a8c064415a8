#include "engine/layers/pooling.h"

namespace psgd {
namespace {

std::string describe_pool(const std::string& name, const char* kind, ops::Pool2dGeometry g) {
  return name + ": " + kind + " " + std::to_string(g.kernel) + "x" + std::to_string(g.kernel) +
         " stride " + std::to_string(g.stride);
}

}  // namespace

AvgPool2d::AvgPool2d(std::string name, int kernel, int stride)
    : Layer(std::move(name)), geometry_{kernel, stride} {}

std::string AvgPool2d::describe() const { return describe_pool(name_, "avg_pool", geometry_); }

Shape AvgPool2d::output_shape(std::span<const Shape> inputs) const {
  return ops::pool2d_output_shape(inputs[0], geometry_);
}

void AvgPool2d::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode) {
  ops::avg_pool_forward(ctx, x[0], geometry_, y);
}

void AvgPool2d::backward(Context& ctx, std::span<const Tensor>, const Tensor&, const Tensor& dy,
                         std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  if (dx[0].defined()) ops::avg_pool_backward(ctx, dy, geometry_, dx[0], dx_modes[0]);
}

MaxPool2d::MaxPool2d(std::string name, int kernel, int stride)
    : Layer(std::move(name)), geometry_{kernel, stride} {}

std::string MaxPool2d::describe() const { return describe_pool(name_, "max_pool", geometry_); }

Shape MaxPool2d::output_shape(std::span<const Shape> inputs) const {
  return ops::pool2d_output_shape(inputs[0], geometry_);
}

void MaxPool2d::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode) {
  ops::max_pool_forward(ctx, x[0], geometry_, y);
}

void MaxPool2d::backward(Context& ctx, std::span<const Tensor> x, const Tensor&, const Tensor& dy,
                         std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  if (dx[0].defined()) ops::max_pool_backward(ctx, x[0], dy, geometry_, dx[0], dx_modes[0]);
}

}  // namespace psgd
