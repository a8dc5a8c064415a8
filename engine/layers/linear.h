// Fully connected layer with bias; a 4-D input is flattened per sample, as PyTorch's classifiers
// do after their last pooling.
#pragma once

#include "engine/layer.h"
#include "engine/params.h"

namespace psgd {

class Linear final : public Layer {
 public:
  // Registers "<name>.weight" (out, in) and "<name>.bias" (out).
  Linear(ParamStore& params, const std::string& name, int in_features, int out_features);

  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  int64_t workspace_floats(const Context& ctx, std::span<const Shape> inputs) const override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;

 private:
  ParamStore& params_;
  int in_, out_;
  int weight_, bias_;
};

}  // namespace psgd
