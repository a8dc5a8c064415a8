// Batch normalisation (2-D or 4-D input), PyTorch semantics: momentum 0.1, eps 1e-5, biased
// variance to normalise, unbiased variance in the running estimate, num_batches_tracked.
#pragma once

#include "engine/layer.h"
#include "engine/params.h"

namespace psgd {

class BatchNorm final : public Layer {
 public:
  // Registers "<name>.{weight,bias,running_mean,running_var,num_batches_tracked}".
  BatchNorm(ParamStore& params, const std::string& name, int channels);

  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  void plan(Device device, std::span<const Shape> inputs) override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;

  int weight_id() const { return weight_; }
  int bias_id() const { return bias_; }

 private:
  ParamStore& params_;
  int channels_;
  int weight_, bias_, running_mean_, running_var_, batches_tracked_;
  DeviceBuffer saved_;  // batch mean (C) then 1/sqrt(var + eps) (C), for backward
};

}  // namespace psgd
