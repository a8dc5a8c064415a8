#include "engine/layers/elementwise.h"

#include <sstream>

namespace psgd {

void ReLU::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode) {
  ops::relu_forward(ctx, x[0], y);
}

void ReLU::backward(Context& ctx, std::span<const Tensor>, const Tensor& y, const Tensor& dy,
                    std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  if (dx[0].defined()) ops::relu_backward(ctx, y, dy, dx[0], dx_modes[0]);
}

Shape Add::output_shape(std::span<const Shape> inputs) const {
  PSGD_CHECK(inputs[0] == inputs[1], name_, ": cannot add ", inputs[0].str(), " and ",
             inputs[1].str());
  return inputs[0];
}

void Add::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode) {
  ops::add_forward(ctx, x[0], x[1], y);
}

void Add::backward(Context& ctx, std::span<const Tensor>, const Tensor&, const Tensor& dy,
                   std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  for (size_t i = 0; i < dx.size(); ++i)
    if (dx[i].defined()) ops::grad_pass(ctx, dy, dx[i], dx_modes[i]);
}

Dropout::Dropout(std::string name, float p, uint32_t stream)
    : Layer(std::move(name)), p_(p), stream_(stream) {
  PSGD_CHECK(p >= 0.0f && p < 1.0f, name_, ": dropout probability ", p, " outside [0, 1)");
}

std::string Dropout::describe() const {
  std::ostringstream s;
  s << name_ << ": dropout p=" << p_;
  return s.str();
}

void Dropout::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) {
  if (mode == Mode::Eval) {
    tensor_copy(y, x[0]);
    return;
  }
  ops::dropout_forward(ctx, x[0], p_, ctx.seed(), mask_stream(forwards_++), y);
}

void Dropout::backward(Context& ctx, std::span<const Tensor>, const Tensor&, const Tensor& dy,
                       std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  PSGD_CHECK(forwards_ > 0, name_, ": backward before any training forward");
  if (dx[0].defined()) ops::dropout_backward(ctx, dy, p_, ctx.seed(), last_stream(), dx[0], dx_modes[0]);
}

}  // namespace psgd
