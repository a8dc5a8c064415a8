// Parameter-free elementwise layers: ReLU, the residual Add, and Dropout.
#pragma once

#include "engine/layer.h"

namespace psgd {

class ReLU final : public Layer {
 public:
  explicit ReLU(std::string name) : Layer(std::move(name)) {}
  std::string describe() const override { return name_ + ": relu"; }
  Shape output_shape(std::span<const Shape> inputs) const override { return inputs[0]; }
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;
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
};

// Inverted dropout; identity in Eval mode. Each Train forward draws a fresh mask from the
// counter-based RNG keyed by (context seed, this layer's stream, the forward count); backward
// recomputes it instead of storing it.
class Dropout final : public Layer {
 public:
  Dropout(std::string name, float p, uint32_t stream);
  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override { return inputs[0]; }
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;

  // The RNG stream of the mask drawn by the most recent Train forward.
  uint64_t last_stream() const { return mask_stream(forwards_ - 1); }
  uint32_t stream() const { return stream_; }
  uint64_t forwards() const { return forwards_; }
  void set_forwards(uint64_t count) { forwards_ = count; }

 private:
  uint64_t mask_stream(uint64_t forward_index) const {
    return (uint64_t{stream_} << 32) | (forward_index & 0xffffffffu);
  }

  float p_;
  uint32_t stream_;
  uint64_t forwards_ = 0;
};

}  // namespace psgd
