// Average and max pooling layers (square windows, no padding).
#pragma once

#include "engine/layer.h"

namespace psgd {

class AvgPool2d final : public Layer {
 public:
  AvgPool2d(std::string name, int kernel, int stride);
  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;

 private:
  ops::Pool2dGeometry geometry_;
};

class MaxPool2d final : public Layer {
 public:
  MaxPool2d(std::string name, int kernel, int stride);
  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;

 private:
  ops::Pool2dGeometry geometry_;
};

}  // namespace psgd
