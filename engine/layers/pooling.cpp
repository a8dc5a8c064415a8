#include "engine/layers/pooling.h"

namespace psgd {

Pool2d::Pool2d(std::string name, PoolKind kind, int kernel, int stride)
    : Layer(std::move(name)), kind_(kind), geometry_{kernel, stride} {}

std::string Pool2d::describe() const {
  return name_ + ": " + (kind_ == PoolKind::Average ? "avg_pool " : "max_pool ") +
         std::to_string(geometry_.kernel) + "x" + std::to_string(geometry_.kernel) + " stride " +
         std::to_string(geometry_.stride);
}

Shape Pool2d::output_shape(std::span<const Shape> inputs) const {
  return ops::pool2d_output_shape(inputs[0], geometry_);
}

void Pool2d::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode) {
  if (kind_ == PoolKind::Average)
    ops::avg_pool_forward(ctx, x[0], geometry_, y);
  else
    ops::max_pool_forward(ctx, x[0], geometry_, y);
}

void Pool2d::backward(Context& ctx, std::span<const Tensor> x, const Tensor&, const Tensor& dy,
                      std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  if (!dx[0].defined()) return;
  if (kind_ == PoolKind::Average)
    ops::avg_pool_backward(ctx, dy, geometry_, dx[0], dx_modes[0]);
  else
    ops::max_pool_backward(ctx, x[0], dy, geometry_, dx[0], dx_modes[0]);
}

}  // namespace psgd
