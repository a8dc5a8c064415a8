#include "engine/layers/elementwise.h"

#include <algorithm>
#include <sstream>

#include "kernels/quant_math.h"

namespace psgd {

ReLU::ReLU(std::string name, std::string clip_bn)
    : Layer(std::move(name)), clip_bn_(std::move(clip_bn)) {}

std::string ReLU::describe() const {
  if (bits_ == 0) return name_ + ": relu";
  return name_ + ": relu, activations at " + std::to_string(bits_) + " bits (" +
         (clip_max_ > 0.0f ? "clipped" : "running") + " range)";
}

void ReLU::plan(Device device, std::span<const Shape>) {
  if (scratch_.bytes() == 0 || scratch_.device() != device)
    scratch_ = DeviceBuffer(device, 2 * sizeof(float));
}

void ReLU::set_activation_quant(int bits, float clip_max) {
  PSGD_CHECK(bits == 0 || (bits >= 2 && bits <= 8), name_,
             ": activation bits must be 2..8 (or 0 for float), got ", bits);
  PSGD_CHECK(clip_max >= 0.0f, name_, ": the clipping range must not be negative");
  bits_ = bits;
  clip_max_ = clip_max;
  running_max_ = 0.0f;
  seen_ = false;
}

void ReLU::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) {
  if (bits_ == 0) {
    ops::relu_forward(ctx, x[0], y);
    return;
  }
  PSGD_CHECK(mode == Mode::Eval, name_, ": activation quantization is for evaluation only");
  if (clip_max_ == 0.0f) {  // the running range of the reference
    const Tensor minmax = scratch_.f32(0, Shape{2});
    ops::tensor_min_max(ctx, x[0], minmax);
    float batch[2];
    memory_copy(batch, Device::CPU, minmax.data, minmax.device, sizeof batch);
    running_max_ = quant::running_update(running_max_, std::max(0.0f, batch[1]), !seen_);
    seen_ = true;
  }
  const int levels = quant::activation_levels(bits_);
  ops::quantize_activations(ctx, x[0], activation_max() / static_cast<float>(levels), levels, y);
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

void Add::forward_relu(Context& ctx, std::span<const Tensor> x, const Tensor& relu_y, Mode) {
  ops::add_relu_forward(ctx, x[0], x[1], relu_y);
}

void Add::backward_relu(Context& ctx, std::span<const Tensor>, const Tensor& relu_y,
                        const Tensor& relu_dy, std::span<const Tensor> dx,
                        std::span<const ops::GradMode> dx_modes) {
  for (size_t i = 0; i < dx.size(); ++i)
    if (dx[i].defined()) ops::relu_backward(ctx, relu_y, relu_dy, dx[i], dx_modes[i]);
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

void Dropout::plan(Device device, std::span<const Shape>) {
  if (mask_index_.bytes() != 0 && mask_index_.device() == device) return;
  mask_index_ = DeviceBuffer(device, sizeof(int32_t));
  upload_mask_index();
}

Tensor Dropout::mask_index() const {
  return Tensor(reinterpret_cast<int32_t*>(mask_index_.data()), Shape{1}, mask_index_.device());
}

void Dropout::upload_mask_index() {
  const int32_t index = static_cast<int32_t>(static_cast<uint32_t>(forwards_ - 1));
  memory_copy(mask_index_.data(), mask_index_.device(), &index, Device::CPU, sizeof index);
}

void Dropout::set_forwards(uint64_t count) {
  forwards_ = count;
  if (mask_index_.bytes() != 0) upload_mask_index();
}

void Dropout::forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) {
  if (mode == Mode::Eval) {
    ops::cast(ctx, x[0], y);  // a copy on the device's stream, which a captured evaluation records
    return;
  }
  PSGD_CHECK(mask_index_.bytes() != 0, name_, ": forward before plan()");
  ops::count_up(ctx, mask_index());
  ops::dropout_forward(ctx, x[0], p_, ctx.seed(), stream_base(), y, mask_index());
  ++forwards_;
}

void Dropout::backward(Context& ctx, std::span<const Tensor>, const Tensor&, const Tensor& dy,
                       std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) {
  PSGD_CHECK(forwards_ > 0, name_, ": backward before any training forward");
  if (dx[0].defined())
    ops::dropout_backward(ctx, dy, p_, ctx.seed(), stream_base(), dx[0], dx_modes[0], mask_index());
}

}  // namespace psgd
