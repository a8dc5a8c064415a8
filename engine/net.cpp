#include "engine/net.h"

#include <algorithm>

#include "engine/interval_packing.h"
#include "engine/layers/elementwise.h"

namespace psgd {

Net::Net(std::string arch, Shape sample_shape, int classes)
    : arch_(std::move(arch)), sample_shape_(sample_shape), classes_(classes) {
  PSGD_CHECK(sample_shape.rank() == 3, "a sample is (C, H, W), got ", sample_shape.str());
  PSGD_CHECK(classes >= 1, "a network needs at least one class, got ", classes);
}

int Net::add(std::unique_ptr<Layer> layer, std::vector<int> inputs) {
  PSGD_CHECK(!params_.allocated(), "layer added after finalize()");
  PSGD_CHECK(static_cast<int>(inputs.size()) == layer->arity(), layer->describe(), ": takes ",
             layer->arity(), " inputs, given ", inputs.size());
  for (int id : inputs)
    PSGD_CHECK(id >= 0 && id < tensor_count_, layer->describe(), ": input tensor ", id,
               " does not exist yet");
  nodes_.push_back({std::move(layer), std::move(inputs), tensor_count_, {}, {}, {}});
  return tensor_count_++;
}

void Net::finalize(Device device) {
  PSGD_CHECK(!nodes_.empty(), "a network needs at least one layer");
  params_.allocate(device);
  loss_ = DeviceBuffer(device, sizeof(float));
  loss_view_ = loss_.f32(0, Shape{1});
  // ReLUs that alone read a layer's output: that layer may compute them (Layer::can_fuse_relu).
  std::vector<int> consumers(tensor_count_, 0);
  for (const Node& n : nodes_)
    for (int id : n.inputs) ++consumers[id];
  relu_after_.assign(nodes_.size(), -1);
  for (size_t r = 0; r < nodes_.size(); ++r) {
    const Node& relu = nodes_[r];
    if (!dynamic_cast<const ReLU*>(relu.layer.get()) || relu.inputs[0] == kInput) continue;
    const int producer = relu.inputs[0] - 1;  // node k writes tensor k + 1
    if (consumers[relu.inputs[0]] == 1) relu_after_[producer] = static_cast<int>(r);
  }
  // Residual joins that alone read a layer's output and whose ReLU alone reads theirs, with the
  // other input computed earlier: that layer may compute the join and its ReLU
  // (Layer::can_fuse_add_relu).
  add_after_.assign(nodes_.size(), -1);
  for (size_t a = 0; a < nodes_.size(); ++a) {
    const Node& add = nodes_[a];
    if (!dynamic_cast<const Add*>(add.layer.get()) || relu_after_[a] < 0) continue;
    for (int side = 0; side < 2; ++side) {
      const int id = add.inputs[side], residual = add.inputs[1 - side];
      if (id != kInput && consumers[id] == 1 && residual < id) {
        add_after_[id - 1] = static_cast<int>(a);
        break;
      }
    }
  }
}

int Net::residual_of(size_t add) const {
  const std::vector<int>& in = nodes_[add].inputs;
  const bool first_fused = in[0] != kInput && add_after_[in[0] - 1] == static_cast<int>(add);
  return first_fused ? in[1] : in[0];
}

bool Net::fuses(bool preferred) const {
  return fusion_ == Fusion::All || (fusion_ == Fusion::Preferred && preferred);
}

bool Net::fuses_add_relu(size_t k) const {
  const int a = add_after_[k];
  const Layer& producer = *nodes_[k].layer;
  return a >= 0 && fuses(producer.prefers_add_relu_fusion()) && producer.can_fuse_add_relu() &&
         static_cast<const ReLU*>(nodes_[relu_after_[a]].layer.get())->fusable();
}

bool Net::fuses_relu(size_t k) const {
  const int r = relu_after_[k];
  const Layer& producer = *nodes_[k].layer;
  return r >= 0 && fuses(producer.prefers_fusion()) && producer.can_fuse_relu() &&
         static_cast<const ReLU*>(nodes_[r].layer.get())->fusable();
}

std::vector<const Layer*> Net::layers() const {
  std::vector<const Layer*> out;
  for (const Node& n : nodes_) out.push_back(n.layer.get());
  return out;
}

std::vector<Layer*> Net::layers() {
  std::vector<Layer*> out;
  for (Node& n : nodes_) out.push_back(n.layer.get());
  return out;
}

void Net::plan(Context& ctx, int64_t batch) {
  PSGD_CHECK(params_.allocated(), "plan() before finalize()");
  PSGD_CHECK(batch >= 1, "batch size must be positive, got ", batch);
  PSGD_CHECK(ctx.device() == params_.device(), "the network lives on ",
             device_name(params_.device()), " but the context runs on ", device_name(ctx.device()));

  // Shapes first; every tensor but the input gets a value and a gradient. Sizes are counted in
  // elements of the activation type, each buffer padded to kAlignElements.
  const DType dtype = ctx.activation_dtype();
  const auto padded = [](int64_t elements) {
    return (elements + kAlignElements - 1) / kAlignElements * kAlignElements;
  };
  std::vector<Shape> shapes(tensor_count_);
  shapes[kInput] = Shape{batch, sample_shape_[0], sample_shape_[1], sample_shape_[2]};
  // A tensor that a ReLU alone reads shares that ReLU's value and gradient: where its producer
  // computes the ReLU (Layer::can_fuse_relu) the tensor itself is never written, and where it
  // does not, the ReLU runs in place (no backward pass reads its layer's own output but ReLU's).
  // So does the tensor that a residual join alone reads before such a ReLU: the join then runs
  // in place too, and its backward routes the gradient onto itself.
  std::vector<int> shares_with(tensor_count_, -1);
  for (size_t k = 0; k < nodes_.size(); ++k) {
    const int relu = add_after_[k] >= 0 ? relu_after_[add_after_[k]] : relu_after_[k];
    if (relu >= 0) shares_with[nodes_[k].output] = nodes_[relu].output;
  }
  // A staged input: bf16 activations start from a bf16 copy of the float32 images.
  int64_t value_elements = dtype == DType::F32 ? 0 : padded(shapes[kInput].numel());
  int64_t workspace = 0;
  std::vector<Shape> in_shapes;
  for (Node& n : nodes_) {
    in_shapes.clear();
    for (int id : n.inputs) in_shapes.push_back(shapes[id]);
    shapes[n.output] = n.layer->output_shape(in_shapes);
    workspace = std::max(workspace, n.layer->workspace_floats(ctx, in_shapes));
    n.layer->plan(ctx.device(), in_shapes);
    if (shares_with[n.output] < 0) value_elements += padded(shapes[n.output].numel());
  }
  PSGD_CHECK(shapes.back() == Shape({batch, classes_}), arch_, ": the last layer gives ",
             shapes.back().str(), ", expected logits ", Shape({batch, classes_}).str());

  // Values are all kept for the backward pass. A gradient lives from the backward step of its
  // tensor's last consumer (step -1, the loss, for the logits) to that of its producer; those
  // never alive together share memory, which keeps the backward working set small.
  const int steps = static_cast<int>(nodes_.size());
  std::vector<LiveBuffer> lives(tensor_count_, LiveBuffer{0, -1, -1});
  std::vector<bool> consumed(tensor_count_, false);
  for (int i = steps - 1; i >= 0; --i) {
    const Node& n = nodes_[i];
    const int step = steps - 1 - i;
    lives[n.output].elements = padded(shapes[n.output].numel());
    lives[n.output].last = step;
    for (int id : n.inputs) {
      if (consumed[id]) continue;
      consumed[id] = true;
      lives[id].first = step;
    }
  }
  // A layer that computes the ReLU after it (or the residual join and the ReLU after that) reads
  // that ReLU's output gradient in its own backward step, after the ReLU's: the gradient must
  // live until then.
  for (int k = 0; k < steps; ++k) {
    const int relu = add_after_[k] >= 0 ? relu_after_[add_after_[k]] : relu_after_[k];
    if (relu < 0) continue;
    LiveBuffer& g = lives[nodes_[relu].output];
    g.last = std::max(g.last, steps - 1 - k);
  }
  for (int id = 1; id + 1 < tensor_count_; ++id)
    PSGD_CHECK(consumed[id], arch_, ": the output of layer '", nodes_[id - 1].layer->name(),
               "' is never used");
  for (int id = 1; id < tensor_count_; ++id)
    if (shares_with[id] >= 0) lives[id] = LiveBuffer{0, -1, -1};  // never alive on its own
  const Packing grads = pack_buffers({lives.begin() + 1, lives.end()});

  const size_t element = dtype_size(dtype);
  const size_t bytes = static_cast<size_t>(value_elements + grads.total_elements) * element;
  if (bytes > arena_.bytes()) {
    arena_ = DeviceBuffer(ctx.device(), bytes);
    ++memory_generation_;
  } else if (dtype != dtype_) {
    ++memory_generation_;  // the same memory, laid out anew
  }
  ctx.reserve_workspace(workspace);

  values_.assign(tensor_count_, Tensor());
  grads_.assign(tensor_count_, Tensor());
  const auto at = [&](int64_t elements, const Shape& shape) {
    return arena_.view(static_cast<size_t>(elements) * element, shape, dtype);
  };
  int64_t offset = 0;
  staged_input_ = Tensor();
  if (dtype != DType::F32) {
    staged_input_ = at(0, shapes[kInput]);
    offset = padded(shapes[kInput].numel());
  }
  for (int id = 1; id < tensor_count_; ++id) {
    if (shares_with[id] >= 0) continue;
    values_[id] = at(offset, shapes[id]);
    offset += padded(shapes[id].numel());
    grads_[id] = at(value_elements + grads.offsets[id - 1], shapes[id]);
  }
  // Shared buffers from the last tensor back: a tensor shares with a later one, which may in
  // turn share with a later one still.
  for (int id = tensor_count_ - 1; id >= 1; --id) {
    if (shares_with[id] < 0) continue;
    values_[id] = values_[shares_with[id]];
    grads_[id] = grads_[shares_with[id]];
  }

  for (Node& n : nodes_) {
    n.x.clear();
    n.dx.clear();
    for (int id : n.inputs) {
      n.x.push_back(values_[id]);
      n.dx.push_back(grads_[id]);
    }
  }

  // Gradient modes: in backward order, the first consumer of a tensor overwrites its gradient
  // and later consumers accumulate into it.
  std::vector<bool> written(tensor_count_, false);
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    it->dx_modes.assign(it->inputs.size(), ops::GradMode::Overwrite);
    for (size_t i = 0; i < it->inputs.size(); ++i) {
      const int id = it->inputs[i];
      if (written[id]) it->dx_modes[i] = ops::GradMode::Accumulate;
      written[id] = true;
    }
  }
  batch_ = batch;
  dtype_ = dtype;
  loss_ready_ = false;
  computed_by_.clear();  // known again after the next forward
}

const Tensor& Net::forward(Context& ctx, const Tensor& images, Mode mode) {
  PSGD_CHECK(images.shape.rank() == 4, arch_, ": images must be (N, C, H, W), got ",
             images.shape.str());
  if (images.shape[0] != batch_ || ctx.activation_dtype() != dtype_) plan(ctx, images.shape[0]);
  check_shape("Net::forward", "images", images,
              Shape{batch_, sample_shape_[0], sample_shape_[1], sample_shape_[2]});
  PSGD_CHECK(images.device == ctx.device() && images.dtype == DType::F32, arch_,
             ": images must be float32 on ", device_name(ctx.device()));
  if (staged_input_.defined()) ops::cast(ctx, images, staged_input_);
  values_[kInput] = staged_input_.defined() ? staged_input_ : images;
  for (Node& n : nodes_)
    for (size_t i = 0; i < n.inputs.size(); ++i)
      if (n.inputs[i] == kInput) n.x[i] = values_[kInput];
  computed_by_.assign(nodes_.size(), -1);
  for (size_t k = 0; k < nodes_.size(); ++k) forward_step(ctx, k, mode);
  last_mode_ = mode;
  loss_ready_ = false;
  return values_.back();
}

void Net::forward_step(Context& ctx, size_t k, Mode mode) {
  Node& n = nodes_[k];
  if (computed_by_[k] >= 0) return;
  if (fuses_add_relu(k)) {
    const int a = add_after_[k], r = relu_after_[a];
    n.layer->forward_add_relu(ctx, n.x, values_[residual_of(a)], values_[nodes_[r].output], mode);
    computed_by_[a] = computed_by_[r] = static_cast<int>(k);
  } else if (fuses_relu(k)) {
    const int r = relu_after_[k];
    n.layer->forward_relu(ctx, n.x, values_[nodes_[r].output], mode);
    computed_by_[r] = static_cast<int>(k);
  } else {
    n.layer->forward(ctx, n.x, values_[n.output], mode);
  }
}

const Tensor& Net::loss(Context& ctx, const Tensor& labels) {
  PSGD_CHECK(values_.size() == static_cast<size_t>(tensor_count_) && values_[kInput].defined(),
             "loss() before forward()");
  ops::softmax_cross_entropy(ctx, values_.back(), labels, loss_view_, grads_.back());
  loss_ready_ = true;
  return loss_view_;
}

bool Net::replayable(Mode mode) const {
  return std::all_of(nodes_.begin(), nodes_.end(),
                     [mode](const Node& n) { return n.layer->replayable(mode); });
}

void Net::count_replayed_forward() {
  for (Node& n : nodes_) n.layer->count_replayed_forward();
}

const Tensor& Net::layer_output(size_t index) const {
  PSGD_CHECK(index < nodes_.size() && !values_.empty(), "no planned output for layer ", index);
  return values_[nodes_[index].output];
}

float Net::loss_value() const {
  float value = 0.0f;
  memory_copy(&value, Device::CPU, loss_.data(), loss_.device(), sizeof value);
  return value;
}

void Net::backward(Context& ctx) {
  PSGD_CHECK(last_mode_ == Mode::Train, "backward() needs a Train-mode forward");
  PSGD_CHECK(loss_ready_, "backward() before loss()");
  for (size_t k = nodes_.size(); k-- > 0;) backward_step(ctx, k);
  loss_ready_ = false;
}

void Net::backward_step(Context& ctx, size_t k) {
  Node& n = nodes_[k];
  if (computed_by_[k] >= 0) {
    // A residual join computed by the layer before it still sends the ReLU's masked gradient
    // to its residual, here, before the residual's producer runs; that layer's own share
    // follows in its step.
    if (relu_after_[k] >= 0 && computed_by_[relu_after_[k]] == computed_by_[k]) {
      const int r = relu_after_[k], residual = residual_of(k);
      std::vector<Tensor> dx(n.inputs.size());
      for (size_t i = 0; i < n.inputs.size(); ++i)
        if (n.inputs[i] == residual) dx[i] = n.dx[i];
      n.layer->backward_relu(ctx, n.x, values_[nodes_[r].output], grads_[nodes_[r].output], dx,
                             n.dx_modes);
    }
    return;
  }
  const int relu = add_after_[k] >= 0 && computed_by_[add_after_[k]] == static_cast<int>(k)
                       ? relu_after_[add_after_[k]]
                       : relu_after_[k];
  if (relu >= 0 && computed_by_[relu] == static_cast<int>(k))
    n.layer->backward_relu(ctx, n.x, values_[nodes_[relu].output], grads_[nodes_[relu].output],
                           n.dx, n.dx_modes);
  else
    n.layer->backward(ctx, n.x, values_[n.output], grads_[n.output], n.dx, n.dx_modes);
}

void Net::forward_layer(Context& ctx, size_t index, Mode mode) {
  PSGD_CHECK(index < nodes_.size() && computed_by_.size() == nodes_.size(),
             "forward_layer() before forward() (since the last plan or change of fusion), or no "
             "layer ",
             index);
  forward_step(ctx, index, mode);
}

void Net::backward_layer(Context& ctx, size_t index) {
  PSGD_CHECK(
      index < nodes_.size() && computed_by_.size() == nodes_.size() && last_mode_ == Mode::Train,
      "backward_layer() before a Train forward(), or no layer ", index);
  // backward() reuses the logits' gradient buffer for others: loss() must come again after it.
  PSGD_CHECK(loss_ready_, "backward_layer() before loss()");
  backward_step(ctx, index);
}

int Net::computed_by(size_t index) const {
  PSGD_CHECK(index < computed_by_.size(), "computed_by() before forward(), or no layer ", index);
  return computed_by_[index];
}

void Net::backward(Context& ctx, const Tensor& dlogits) {
  PSGD_CHECK(values_.size() == static_cast<size_t>(tensor_count_) && values_[kInput].defined(),
             "backward() before forward()");
  check_shape("Net::backward", "dlogits", dlogits, grads_.back().shape);
  ops::cast(ctx, dlogits, grads_.back());
  loss_ready_ = true;
  backward(ctx);
}

}  // namespace psgd
