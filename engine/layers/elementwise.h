// Parameter-free elementwise layers: ReLU, the residual Add, and Dropout.
#pragma once

#include "engine/layer.h"
#include "engine/memory.h"

namespace psgd {

// ReLU, which at evaluation can also quantize its output to `bits` (levels 0 .. 2^bits - 1):
// the range is fixed (clipped) or runs over the evaluation batches as the reference's.
class ReLU final : public Layer {
 public:
  // clip_bn: the BatchNorm right before this ReLU (for a block's last ReLU, the one of the
  // residual branch), whose beta + n * gamma gives the clipped range; "" when there is none.
  explicit ReLU(std::string name, std::string clip_bn = "");
  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override { return inputs[0]; }
  void plan(Device device, std::span<const Shape> inputs) override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;

  const std::string& clip_bn() const { return clip_bn_; }
  // bits 0 turns quantization off; clip_max > 0 fixes the range, 0 lets it run (reset here).
  void set_activation_quant(int bits, float clip_max);
  int activation_bits() const { return bits_; }
  // A plain ReLU, which the layer before it may compute (Layer::can_fuse_relu).
  bool fusable() const { return bits_ == 0; }
  // Quantized activations are not: their range is read back or fixed in the kernel's arguments.
  bool replayable(Mode) const override { return bits_ == 0; }
  // The range of the last quantized evaluation batch.
  float activation_max() const { return clip_max_ > 0.0f ? clip_max_ : running_max_; }

 private:
  std::string clip_bn_;
  int bits_ = 0;
  float clip_max_ = 0.0f;
  float running_max_ = 0.0f;
  bool seen_ = false;
  DeviceBuffer scratch_;  // (2): a batch's min and max
};

class Add final : public Layer {
 public:
  explicit Add(std::string name) : Layer(std::move(name)) {}
  std::string describe() const override { return name_ + ": add"; }
  int arity() const override { return 2; }
  Shape output_shape(std::span<const Shape> inputs) const override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;
  bool can_fuse_relu() const override { return true; }
  void forward_relu(Context& ctx, std::span<const Tensor> x, const Tensor& relu_y,
                    Mode mode) override;
  void backward_relu(Context& ctx, std::span<const Tensor> x, const Tensor& relu_y,
                     const Tensor& relu_dy, std::span<const Tensor> dx,
                     std::span<const ops::GradMode> dx_modes) override;
};

// Inverted dropout; identity in Eval mode. Each Train forward draws a fresh mask from the
// counter-based RNG keyed by (context seed, this layer's stream, the forward count); backward
// recomputes it instead of storing it.
class Dropout final : public Layer {
 public:
  Dropout(std::string name, float p, uint32_t stream);
  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override { return inputs[0]; }
  void plan(Device device, std::span<const Shape> inputs) override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;
  // The mask index lives on the device and counts up there, so a replayed step draws anew.
  void count_replayed_forward() override { ++forwards_; }

  // The RNG stream of the mask drawn by the most recent Train forward.
  uint64_t last_stream() const { return stream_base() | ((forwards_ - 1) & 0xffffffffu); }
  uint32_t stream() const { return stream_; }
  uint64_t forwards() const { return forwards_; }
  void set_forwards(uint64_t count);

 private:
  uint64_t stream_base() const { return uint64_t{stream_} << 32; }
  Tensor mask_index() const;
  void upload_mask_index();

  float p_;
  uint32_t stream_;
  uint64_t forwards_ = 0;
  // int32 (1), on the device: the index of the current Train forward (forwards_ - 1), the low
  // half of the mask's stream.
  DeviceBuffer mask_index_;
};

}  // namespace psgd
