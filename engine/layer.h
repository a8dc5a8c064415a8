// Layer: one node of the static, autograd-free graph. A layer holds views of its parameters
// (ids into the ParamStore) and whatever small state its backward pass needs; the Net owns
// every activation and gradient buffer and hands them in.
//
// The gradient rule, for every layer:
//   - parameter gradients are overwritten by the layer's backward (each parameter has one user
//     in a step);
//   - input gradients follow the GradMode the Net passes for each input: Overwrite for the
//     first consumer of a tensor in backward order, Accumulate for later ones, so that a tensor
//     feeding two layers (the residual shortcut) receives the sum of both gradients;
//   - an undefined input-gradient tensor means nobody needs it (the network input): skip it.
#pragma once

#include <span>
#include <string>

#include "engine/context.h"
#include "kernels/ops.h"

namespace psgd {

enum class Mode : uint8_t { Train, Eval };

class Layer {
 public:
  explicit Layer(std::string name) : name_(std::move(name)) {}
  virtual ~Layer() = default;

  // The layer's name: the state_dict prefix of its parameters, or its module path.
  const std::string& name() const { return name_; }
  virtual std::string describe() const = 0;  // one line, for summaries and errors
  virtual int arity() const { return 1; }    // number of inputs
  virtual Shape output_shape(std::span<const Shape> inputs) const = 0;
  // Scratch floats the layer's ops need from the context's workspace for these input shapes.
  virtual int64_t workspace_floats(const Context& ctx, std::span<const Shape> inputs) const {
    return 0;
  }
  // Called when the Net plans a batch size: allocate per-batch state here, never in a step.
  virtual void plan(Device device, std::span<const Shape> inputs) {}

  virtual void forward(Context& ctx, std::span<const Tensor> x, const Tensor& y, Mode mode) = 0;
  // Called after a Train-mode forward with the same tensors; dy = d(loss)/dy.
  virtual void backward(Context& ctx, std::span<const Tensor> x, const Tensor& y, const Tensor& dy,
                        std::span<const Tensor> dx, std::span<const ops::GradMode> dx_modes) = 0;

  // Fusion with a following ReLU. When a ReLU alone reads this layer's output and has nothing
  // else to do (no activation quantization), the Net may call forward_relu, which writes
  // max(0, output) straight into the ReLU's output `relu_y`, and then backward_relu, which takes
  // the ReLU's output and its gradient: the ReLU's two passes over memory disappear.
  virtual bool can_fuse_relu() const { return false; }
  // Whether fusing a ReLU, or a residual join and its ReLU, pays on this layer's device; the Net
  // fuses only where it does, unless told to fuse wherever it can (Net::Fusion::All, for tests).
  virtual bool prefers_fusion() const { return true; }
  virtual bool prefers_add_relu_fusion() const { return prefers_fusion(); }
  virtual void forward_relu(Context& ctx, std::span<const Tensor> x, const Tensor& relu_y,
                            Mode mode) {
    PSGD_FAIL(name_, " cannot fuse a ReLU");
  }
  virtual void backward_relu(Context& ctx, std::span<const Tensor> x, const Tensor& relu_y,
                             const Tensor& relu_dy, std::span<const Tensor> dx,
                             std::span<const ops::GradMode> dx_modes) {
    PSGD_FAIL(name_, " cannot fuse a ReLU");
  }
  // Fusion with a residual join and its ReLU: where a join (Add) alone reads this layer's output,
  // adds an earlier `residual`, and a ReLU alone reads the join, the Net may call
  // forward_add_relu, which writes max(0, output + residual) straight into the ReLU's output;
  // in backward the join sends the ReLU's masked gradient to the residual alone, and the Net
  // calls backward_relu with the ReLU's output and gradient, as for a fused ReLU.
  virtual bool can_fuse_add_relu() const { return false; }
  virtual void forward_add_relu(Context& ctx, std::span<const Tensor> x, const Tensor& residual,
                                const Tensor& relu_y, Mode mode) {
    PSGD_FAIL(name_, " cannot fuse a residual join and its ReLU");
  }

  // Whether a captured step (training or evaluation) may replay this layer's kernels of that
  // mode: false where their arguments change from step to step, or the host reads their results.
  virtual bool replayable(Mode mode) const { return true; }
  // The host-side bookkeeping of a Train forward (counters), for a replayed step whose kernels
  // ran without forward() being called.
  virtual void count_replayed_forward() {}

 protected:
  std::string name_;
};

}  // namespace psgd
