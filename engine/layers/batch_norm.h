// Batch normalisation (2-D or 4-D input), PyTorch semantics: momentum 0.1, eps 1e-5, biased
// variance to normalise, unbiased variance in the running estimate, num_batches_tracked.
#pragma once

#include "engine/comm.h"
#include "engine/layer.h"
#include "engine/params.h"

namespace psgd {

class BatchNorm final : public Layer {
 public:
  // Registers "<name>.{weight,bias,running_mean,running_var,num_batches_tracked}".
  BatchNorm(ParamStore& params, const std::string& name, int channels);

  std::string describe() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  int64_t workspace_floats(const Context& ctx, std::span<const Shape> inputs) const override;
  void plan(Device device, std::span<const Shape> inputs) override;
  void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) override;
  void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) override;

  // Synchronised BN: training statistics and their gradients are summed over the ranks of
  // `comm` (each holding an equal share of the batch), so that N ranks normalise as one rank
  // with the whole batch. Null (the default) keeps per-replica statistics.
  void synchronise_over(Comm* comm) { sync_ = comm; }
  void count_replayed_forward() override { ++params_.counter(batches_tracked_); }
  // Synchronised BN runs in stages and keeps its ReLU and residual join separate.
  bool can_fuse_relu() const override { return sync_ == nullptr; }
  // The ReLU is fused on both devices. Its backward recomputes the ReLU's mask from x in BN's
  // passes, which read x anyway. Behind a fused residual join the mask needs the residual too:
  // there the GPU reads the ReLU's output in BN's passes, and the CPU masks the gradient in
  // place first, as a separate ReLU would, because reading the ReLU's output in both of BN's
  // passes measured 13% slower per ResNet-32 step (the separate pass leaves the gradient in
  // cache for them). BN + add + ReLU is fused on the GPU only: on the CPU it measured 5-7%
  // slower for the same reason.
  bool prefers_add_relu_fusion() const override { return saved_.device() == Device::CUDA; }
  void forward_relu(Context& ctx, std::span<const Tensor> x, const Tensor& relu_y,
                    Mode mode) override;
  // The residual join after BN and its ReLU in BN's pass.
  bool can_fuse_add_relu() const override { return can_fuse_relu(); }
  void forward_add_relu(Context& ctx, std::span<const Tensor> x, const Tensor& residual,
                        const Tensor& relu_y, Mode mode) override;
  void backward_relu(Context& ctx, std::span<const Tensor> x, const Tensor& relu_y,
                     const Tensor& relu_dy, std::span<const Tensor> dx,
                     std::span<const ops::GradMode> dx_modes) override;

  int weight_id() const { return weight_; }
  int bias_id() const { return bias_; }

 private:
  void forward_with(Context& ctx, const Tensor& x, const Tensor& y, Mode mode, bool relu,
                    const Tensor& residual = {});
  void forward_synchronised(Context& ctx, const Tensor& x, const Tensor& y);
  void backward_synchronised(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& dx,
                             ops::GradMode dx_mode);
  Tensor saved_mean() const { return saved_.f32(0, Shape{channels_}); }
  Tensor saved_invstd() const { return saved_.f32(channels_, Shape{channels_}); }
  Tensor exchange() const { return saved_.f64(2 * channels_ * sizeof(float), Shape{2, channels_}); }

  ParamStore& params_;
  int channels_;
  int weight_, bias_, running_mean_, running_var_, batches_tracked_;
  Comm* sync_ = nullptr;
  bool residual_fused_ = false;  // in the last training forward
  // Batch mean (C), 1/sqrt(var + eps) (C) for backward, then (2, C) float64 for the sums that
  // synchronised BN exchanges between ranks.
  DeviceBuffer saved_;
};

}  // namespace psgd
