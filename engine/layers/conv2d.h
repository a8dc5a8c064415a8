// 2-D convolution without bias (every conv of the reference networks is followed by BN).
#pragma once

#include "engine/layer.h"
#include "engine/params.h"

namespace psgd {

class Conv2d final : public Layer {
 public:
  // Registers "<name>.weight" (out, in, kernel, kernel), role ConvWeight.
  Conv2d(ParamStore& params, const std::string& name, int in_channels, int out_channels,
         int kernel, int stride, int pad);

  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  int64_t workspace_floats(const Context& ctx, std::span<const Shape> inputs) const override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;

  int weight_id() const { return weight_; }

 private:
  ParamStore& params_;
  int weight_;
  ops::Conv2dGeometry geometry_;
};

}  // namespace psgd
