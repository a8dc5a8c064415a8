// Pooling layers: average or max over square windows, no padding.
#pragma once

#include "engine/layer.h"

namespace psgd {

enum class PoolKind : uint8_t { Average, Max };

class Pool2d final : public Layer {
 public:
  Pool2d(std::string name, PoolKind kind, int kernel, int stride);
  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;

 private:
  PoolKind kind_;
  ops::Pool2dGeometry geometry_;
};

}  // namespace psgd
