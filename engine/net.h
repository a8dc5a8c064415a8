// Net: the static layer graph. Layers are added in topological order, each reading earlier
// tensors by id; plan() fixes every shape and places every activation and gradient in one arena
// for a batch size; forward, loss and backward then run without allocating.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/layer.h"
#include "engine/params.h"

namespace psgd {

class Net {
 public:
  static constexpr int kInput = 0;  // the id of the input tensor

  // sample_shape: one input sample, (C, H, W).
  Net(std::string arch, Shape sample_shape, int classes);
  // Layers refer to params(), so a Net stays where it was built.
  Net(const Net&) = delete;
  Net& operator=(const Net&) = delete;

  const std::string& arch() const { return arch_; }
  int classes() const { return classes_; }
  const Shape& sample_shape() const { return sample_shape_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }

  // ---- Building ----
  // Adds a layer reading the given tensors; returns the id of its output tensor. The last
  // tensor added is the network output (the logits).
  int add(std::unique_ptr<Layer> layer, std::vector<int> inputs);
  // Allocates the parameters on `device`; no layers may be added afterwards.
  void finalize(Device device);
  std::vector<const Layer*> layers() const;
  std::vector<Layer*> layers();

  // ---- Running ----
  // Fixes shapes and buffers for `batch` samples, with activations and their gradients of the
  // context's activation_dtype(); device memory grows only when more is needed than planned
  // before. forward() plans by itself when the batch or the activation type changes.
  void plan(Context& ctx, int64_t batch);
  // images (N, C, H, W), float32 on the context's device; returns the logits (N, classes) of
  // the activation type.
  const Tensor& forward(Context& ctx, const Tensor& images, Mode mode);
  // Mean softmax cross-entropy of the last forward's logits against int32 labels (N); stores
  // d(loss)/d(logits) for backward and returns the loss (on the device, one float).
  const Tensor& loss(Context& ctx, const Tensor& labels);
  float loss_value() const;  // copies the last loss to the host
  // Fills every parameter gradient in params().grads(); needs forward(Train) and loss() first.
  void backward(Context& ctx);
  // The same from an explicit d(loss)/d(logits) (N, classes), float32 or of the activation
  // type, for losses computed elsewhere.
  void backward(Context& ctx, const Tensor& dlogits);

  // For captured steps: whether every layer may be replayed in this mode, the host bookkeeping of
  // a replayed Train forward, and a count that changes whenever planning moves the activation
  // memory or the layers change how they use it (a captured step holds its addresses and
  // kernels).
  bool replayable(Mode mode) const;
  void count_replayed_forward();
  uint64_t memory_generation() const { return memory_generation_; }

  // Layers compute the ReLU after them, or the residual join and ReLU after them, where they can
  // (Layer::can_fuse_relu, can_fuse_add_relu) and it pays on their device (Preferred, the
  // default); None and All (wherever they can) check that fusion changes nothing.
  enum class Fusion : uint8_t { None, Preferred, All };
  void set_fusion(Fusion fusion) {
    fusion_ = fusion;
    ++memory_generation_;
    computed_by_.clear();  // known again after the next forward
  }

  // ---- Profiling: one layer's work alone ----
  // Runs the work of layers()[index] as the last forward (in `mode`) or Train forward's backward
  // ran it, on the tensors it left: for timing layers one by one. backward_layer needs loss()
  // since the last backward(). Repeating a layer that accumulates or works in place changes the
  // values later layers see.
  void forward_layer(Context& ctx, size_t index, Mode mode);
  void backward_layer(Context& ctx, size_t index);
  // The layer that computed layers()[index]'s output in the last forward (a ReLU or residual
  // join run by the layer before it), or -1: such a layer's forward_layer does nothing.
  int computed_by(size_t index) const;

  // The last forward's logits. After a step replayed from a graph (TrainStep, Evaluator on a
  // GPU), which runs no forward(), the views follow the last plan, perhaps of another batch
  // size: read a replayed step's results through its sums.
  const Tensor& logits() const { return values_.back(); }
  // The output of layers()[index] from the last forward. A layer whose output only a ReLU reads
  // shares that ReLU's buffer, which holds the ReLU's result after the forward.
  const Tensor& layer_output(size_t index) const;
  int64_t planned_batch() const { return batch_; }

 private:
  struct Node {
    std::unique_ptr<Layer> layer;
    std::vector<int> inputs;
    int output;
    // Planned per batch: input views (the network input rebound at each forward), input
    // gradient views and how to write each.
    std::vector<Tensor> x, dx;
    std::vector<ops::GradMode> dx_modes;
  };

  std::string arch_;
  Shape sample_shape_;
  int classes_;
  ParamStore params_;
  void forward_step(Context& ctx, size_t k, Mode mode);
  void backward_step(Context& ctx, size_t k);
  bool fuses_relu(size_t node) const;
  bool fuses_add_relu(size_t node) const;
  int residual_of(size_t add) const;  // the tensor id of a fused residual join's other input

  std::vector<Node> nodes_;
  int tensor_count_ = 1;         // the input
  std::vector<int> relu_after_;  // per node: the node of a ReLU that alone reads it, or -1
  // per node: the node of a residual join that alone reads it, whose ReLU alone reads the join,
  // and whose other input comes earlier; or -1
  std::vector<int> add_after_;
  // per node, last forward: the node that computed it (a ReLU or a residual join run by the layer
  // before it), or -1
  std::vector<int> computed_by_;
  Fusion fusion_ = Fusion::Preferred;
  // Whether to fuse where the producer can, given whether fusing pays on its device.
  bool fuses(bool preferred) const;

  // Every activation buffer starts at a multiple of this many elements (128 bytes in bf16), for
  // the vector loads of the GPU libraries.
  static constexpr int64_t kAlignElements = 64;

  int64_t batch_ = 0;
  DType dtype_ = DType::F32;
  std::vector<Tensor> values_, grads_;  // by tensor id; grads_[kInput] stays undefined
  Tensor staged_input_;                 // bf16 mode: the images rounded to bf16 (N, C, H, W)
  DeviceBuffer arena_;
  uint64_t memory_generation_ = 0;
  DeviceBuffer loss_;  // one float
  Tensor loss_view_;
  bool loss_ready_ = false;
  Mode last_mode_ = Mode::Eval;
};

}  // namespace psgd
