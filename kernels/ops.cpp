// Validation and device dispatch for the ops of kernels/ops.h (batch normalisation in
// ops_batch_norm.cpp). Shapes are checked here, once, for all backends; the implementations
// assume valid input.
#include <algorithm>
#include <cmath>

#include "kernels/ops_dispatch.h"

namespace psgd::ops {
namespace {

void check_labels(const char* op, const Tensor& logits, const Tensor& labels) {
  check_rank(op, "logits", logits, 2);
  check_shape(op, "labels", labels, Shape{logits.shape[0]});
  PSGD_CHECK(labels.dtype == DType::I32, op, ": labels must be int32");
  if (labels.device != Device::CPU) return;  // the CUDA kernels turn a bad label into a NaN loss
  const int32_t* y = labels.i32();
  for (int64_t i = 0; i < labels.numel(); ++i)
    PSGD_CHECK(y[i] >= 0 && y[i] < logits.shape[1], op, ": label ", y[i], " of sample ", i,
               " is outside [0, ", logits.shape[1], ")");
}

}  // namespace

// ---- Element types ----------------------------------------------------------------------------
void cast(Context& ctx, const Tensor& src, const Tensor& dst) {
  check_devices(ctx, "cast", {&src, &dst});
  check_activations("cast", {&src});
  check_activations("cast", {&dst});
  check_same_shape("cast", src, dst);
  PSGD_DISPATCH(ctx, cast, src, dst);
}

// ---- Convolution ------------------------------------------------------------------------------
Shape conv2d_output_shape(const Shape& x, const Shape& w, Conv2dGeometry g) {
  PSGD_CHECK(x.rank() == 4 && w.rank() == 4, "conv2d: input ", x.str(), " and weight ", w.str(),
             " must be 4-D");
  PSGD_CHECK(x[1] == w[1], "conv2d: input has ", x[1], " channels, weight expects ", w[1]);
  PSGD_CHECK(g.stride >= 1 && g.pad >= 0, "conv2d: stride ", g.stride, " and padding ", g.pad,
             " are invalid");
  const int64_t p = (x[2] + 2 * g.pad - w[2]) / g.stride + 1;
  const int64_t q = (x[3] + 2 * g.pad - w[3]) / g.stride + 1;
  PSGD_CHECK(x[2] + 2 * g.pad >= w[2] && x[3] + 2 * g.pad >= w[3], "conv2d: kernel ", w.str(),
             " larger than padded input ", x.str());
  return Shape{x[0], w[0], p, q};
}

int64_t conv2d_workspace_floats(const Context& ctx, const Shape& x, const Shape& w,
                                Conv2dGeometry g) {
  conv2d_output_shape(x, w, g);  // validates
#ifdef PSGD_WITH_CUDA
  if (ctx.device() == Device::CUDA) return cuda::conv2d_workspace_floats(ctx, x, w, g);
#endif
  return cpu::conv2d_workspace_floats(ctx.threads(), ctx.activation_dtype(), x, w, g);
}

void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, Conv2dGeometry g,
                    const Tensor& y) {
  check_devices(ctx, "conv2d_forward", {&x, &w, &y});
  check_context_activations(ctx, "conv2d_forward", {&x, &y});
  check_float32("conv2d_forward", {&w});
  check_shape("conv2d_forward", "output", y, conv2d_output_shape(x.shape, w.shape, g));
  PSGD_DISPATCH(ctx, conv2d_forward, ctx, x, w, g, y);
}

void conv2d_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw) {
  check_devices(ctx, "conv2d_backward", {&x, &w, &dy, &dx, &dw});
  check_context_activations(ctx, "conv2d_backward", {&x, &dy, &dx});
  check_float32("conv2d_backward", {&w, &dw});
  check_shape("conv2d_backward", "dy", dy, conv2d_output_shape(x.shape, w.shape, g));
  check_shape("conv2d_backward", "dw", dw, w.shape);
  if (dx.defined()) check_shape("conv2d_backward", "dx", dx, x.shape);
  PSGD_DISPATCH(ctx, conv2d_backward, ctx, x, w, dy, g, dx, dx_mode, dw);
}

// ---- Elementwise ------------------------------------------------------------------------------
void relu_forward(Context& ctx, const Tensor& x, const Tensor& y) {
  check_devices(ctx, "relu_forward", {&x, &y});
  check_activations("relu_forward", {&x, &y});
  check_same_shape("relu_forward", x, y);
  PSGD_DISPATCH(ctx, relu_forward, x, y);
}

void relu_backward(Context& ctx, const Tensor& y, const Tensor& dy, const Tensor& dx,
                   GradMode dx_mode) {
  check_devices(ctx, "relu_backward", {&y, &dy, &dx});
  check_activations("relu_backward", {&y, &dy, &dx});
  check_same_shape("relu_backward", y, dy);
  check_same_shape("relu_backward", y, dx);
  PSGD_DISPATCH(ctx, relu_backward, y, dy, dx, dx_mode);
}

void add_forward(Context& ctx, const Tensor& a, const Tensor& b, const Tensor& y) {
  check_devices(ctx, "add_forward", {&a, &b, &y});
  check_activations("add_forward", {&a, &b, &y});
  check_same_shape("add_forward", a, b);
  check_same_shape("add_forward", a, y);
  PSGD_DISPATCH(ctx, add_forward, a, b, y);
}

void add_relu_forward(Context& ctx, const Tensor& a, const Tensor& b, const Tensor& y) {
  check_devices(ctx, "add_relu_forward", {&a, &b, &y});
  check_activations("add_relu_forward", {&a, &b, &y});
  check_same_shape("add_relu_forward", a, b);
  check_same_shape("add_relu_forward", a, y);
  PSGD_DISPATCH(ctx, add_relu_forward, a, b, y);
}

void grad_pass(Context& ctx, const Tensor& src, const Tensor& dst, GradMode mode) {
  check_devices(ctx, "grad_pass", {&src, &dst});
  check_activations("grad_pass", {&src, &dst});
  check_same_shape("grad_pass", src, dst);
  PSGD_DISPATCH(ctx, grad_pass, src, dst, mode);
}

// ---- Pooling ----------------------------------------------------------------------------------
Shape pool2d_output_shape(const Shape& x, Pool2dGeometry g) {
  PSGD_CHECK(x.rank() == 4, "pool2d: input must be 4-D, got ", x.str());
  PSGD_CHECK(g.kernel >= 1 && g.stride >= 1, "pool2d: kernel ", g.kernel, " and stride ", g.stride,
             " must be positive");
  PSGD_CHECK(x[2] >= g.kernel && x[3] >= g.kernel, "pool2d: kernel ", g.kernel,
             " larger than input ", x.str());
  return Shape{x[0], x[1], (x[2] - g.kernel) / g.stride + 1, (x[3] - g.kernel) / g.stride + 1};
}

void avg_pool_forward(Context& ctx, const Tensor& x, Pool2dGeometry g, const Tensor& y) {
  check_devices(ctx, "avg_pool_forward", {&x, &y});
  check_activations("avg_pool_forward", {&x, &y});
  check_shape("avg_pool_forward", "output", y, pool2d_output_shape(x.shape, g));
  PSGD_DISPATCH(ctx, avg_pool_forward, x, g, y);
}

void avg_pool_backward(Context& ctx, const Tensor& dy, Pool2dGeometry g, const Tensor& dx,
                       GradMode dx_mode) {
  check_devices(ctx, "avg_pool_backward", {&dy, &dx});
  check_activations("avg_pool_backward", {&dy, &dx});
  check_shape("avg_pool_backward", "dy", dy, pool2d_output_shape(dx.shape, g));
  PSGD_DISPATCH(ctx, avg_pool_backward, dy, g, dx, dx_mode);
}

void max_pool_forward(Context& ctx, const Tensor& x, Pool2dGeometry g, const Tensor& y) {
  check_devices(ctx, "max_pool_forward", {&x, &y});
  check_activations("max_pool_forward", {&x, &y});
  check_shape("max_pool_forward", "output", y, pool2d_output_shape(x.shape, g));
  PSGD_DISPATCH(ctx, max_pool_forward, x, g, y);
}

void max_pool_backward(Context& ctx, const Tensor& x, const Tensor& dy, Pool2dGeometry g,
                       const Tensor& dx, GradMode dx_mode) {
  check_devices(ctx, "max_pool_backward", {&x, &dy, &dx});
  check_activations("max_pool_backward", {&x, &dy, &dx});
  check_shape("max_pool_backward", "dy", dy, pool2d_output_shape(x.shape, g));
  check_same_shape("max_pool_backward", x, dx);
  PSGD_DISPATCH(ctx, max_pool_backward, x, dy, g, dx, dx_mode);
}

// ---- Linear -----------------------------------------------------------------------------------
namespace {
// A 4-D input is read as (N, C*H*W), the flatten of PyTorch's classifiers.
Tensor as_matrix(const Tensor& x) {
  if (!x.defined() || x.shape.rank() == 2) return x;
  PSGD_CHECK(x.shape.rank() == 4, "linear: input must be 2-D or 4-D, got ", x.shape.str());
  return x.reshaped(Shape{x.shape[0], x.numel() / std::max<int64_t>(x.shape[0], 1)});
}

void check_linear(const char* op, const Tensor& x2, const Tensor& w, const Tensor& b) {
  check_rank(op, "weight", w, 2);
  check_rank(op, "input", x2, 2);
  PSGD_CHECK(x2.shape[1] == w.shape[1], op, ": input has ", x2.shape[1], " features, weight ",
             w.shape.str(), " expects ", w.shape[1]);
  check_shape(op, "bias", b, Shape{w.shape[0]});
}
}  // namespace

int64_t linear_workspace_floats(const Context& ctx, const Shape& x, const Shape& w) {
  PSGD_CHECK(w.rank() == 2 && x.rank() >= 2, "linear: input ", x.str(), " and weight ", w.str(),
             " must be 2-D or more");
  const Shape x2{x[0], x.numel() / std::max<int64_t>(x[0], 1)};
#ifdef PSGD_WITH_CUDA
  if (ctx.device() == Device::CUDA) return cuda::linear_workspace_floats(ctx, x2, w);
#endif
  return cpu::linear_workspace_floats(ctx, x2, w);
}

void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y) {
  check_devices(ctx, "linear_forward", {&x, &w, &b, &y});
  check_context_activations(ctx, "linear_forward", {&x, &y});
  check_float32("linear_forward", {&w, &b});
  const Tensor x2 = as_matrix(x);
  check_linear("linear_forward", x2, w, b);
  check_shape("linear_forward", "output", y, Shape{x2.shape[0], w.shape[0]});
#ifdef PSGD_WITH_CUDA
  if (ctx.device() == Device::CUDA) return cuda::linear_forward(ctx, x2, w, b, y);
#endif
  cpu::linear_forward(ctx, x2, w, b, y);
}

void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, GradMode dx_mode, const Tensor& dw, const Tensor& db) {
  check_devices(ctx, "linear_backward", {&x, &w, &dy, &dx, &dw, &db});
  check_context_activations(ctx, "linear_backward", {&x, &dy, &dx});
  check_float32("linear_backward", {&w, &dw, &db});
  const Tensor x2 = as_matrix(x);
  check_linear("linear_backward", x2, w, db);
  check_shape("linear_backward", "dy", dy, Shape{x2.shape[0], w.shape[0]});
  check_shape("linear_backward", "dw", dw, w.shape);
  if (dx.defined()) check_same_shape("linear_backward", x, dx);
#ifdef PSGD_WITH_CUDA
  if (ctx.device() == Device::CUDA)
    return cuda::linear_backward(ctx, x2, w, dy, as_matrix(dx), dx_mode, dw, db);
#endif
  cpu::linear_backward(ctx, x2, w, dy, as_matrix(dx), dx_mode, dw, db);
}

// ---- Dropout ----------------------------------------------------------------------------------
namespace {
void check_mask_index(const char* op, const Tensor& mask_index) {
  if (!mask_index.defined()) return;
  check_shape(op, "mask_index", mask_index, Shape{1});
  PSGD_CHECK(mask_index.dtype == DType::I32, op, ": mask_index must be int32");
}
}  // namespace

void dropout_forward(Context& ctx, const Tensor& x, float p, uint64_t seed, uint64_t stream,
                     const Tensor& y, const Tensor& mask_index) {
  check_devices(ctx, "dropout_forward", {&x, &y, &mask_index});
  check_activations("dropout_forward", {&x, &y});
  check_same_shape("dropout_forward", x, y);
  check_mask_index("dropout_forward", mask_index);
  PSGD_CHECK(p >= 0.0f && p <= 1.0f, "dropout: probability ", p, " outside [0, 1]");
  PSGD_DISPATCH(ctx, dropout_forward, x, p, seed, stream, y, mask_index);
}

void dropout_backward(Context& ctx, const Tensor& dy, float p, uint64_t seed, uint64_t stream,
                      const Tensor& dx, GradMode dx_mode, const Tensor& mask_index) {
  check_devices(ctx, "dropout_backward", {&dy, &dx, &mask_index});
  check_activations("dropout_backward", {&dy, &dx});
  check_same_shape("dropout_backward", dy, dx);
  check_mask_index("dropout_backward", mask_index);
  PSGD_CHECK(p >= 0.0f && p <= 1.0f, "dropout: probability ", p, " outside [0, 1]");
  PSGD_DISPATCH(ctx, dropout_backward, dy, p, seed, stream, dx, dx_mode, mask_index);
}

void count_up(Context& ctx, const Tensor& counter) {
  check_devices(ctx, "count_up", {&counter});
  PSGD_CHECK(counter.defined(), "count_up: no counter");
  check_mask_index("count_up", counter);
  PSGD_DISPATCH(ctx, count_up, counter);
}

// ---- Loss and metrics -------------------------------------------------------------------------
void softmax_cross_entropy(Context& ctx, const Tensor& logits, const Tensor& labels,
                           const Tensor& loss, const Tensor& dlogits) {
  const char* op = "softmax_cross_entropy";
  check_devices(ctx, op, {&logits, &labels, &loss, &dlogits});
  check_activations(op, {&logits, &dlogits});
  check_float32(op, {&loss});
  check_labels(op, logits, labels);
  check_shape(op, "loss", loss, Shape{1});
  check_same_shape(op, logits, dlogits);
  PSGD_DISPATCH(ctx, softmax_cross_entropy, logits, labels, loss, dlogits);
}

int64_t topk_correct(Context& ctx, const Tensor& logits, const Tensor& labels, int k) {
  check_devices(ctx, "topk_correct", {&logits, &labels});
  check_activations("topk_correct", {&logits});
  check_labels("topk_correct", logits, labels);
  PSGD_CHECK(k >= 1, "topk_correct: k must be positive, got ", k);
  return PSGD_DISPATCH(ctx, topk_correct, logits, labels, k);
}

void accumulate_metrics(Context& ctx, const Tensor& logits, const Tensor& labels,
                        const Tensor& loss, const Tensor& totals) {
  check_devices(ctx, "accumulate_metrics", {&logits, &labels, &loss, &totals});
  check_activations("accumulate_metrics", {&logits});
  check_float32("accumulate_metrics", {&loss});
  check_labels("accumulate_metrics", logits, labels);
  check_shape("accumulate_metrics", "loss", loss, Shape{1});
  check_shape("accumulate_metrics", "totals", totals, Shape{kMetricFields});
  PSGD_CHECK(totals.dtype == DType::F64, "accumulate_metrics: totals must be float64");
  PSGD_DISPATCH(ctx, accumulate_metrics, logits, labels, loss, totals);
}

// ---- Quantization -----------------------------------------------------------------------------
void tensor_min_max(Context& ctx, const Tensor& x, const Tensor& out) {
  check_devices(ctx, "tensor_min_max", {&x, &out});
  check_activations("tensor_min_max", {&x});
  check_float32("tensor_min_max", {&out});
  check_shape("tensor_min_max", "out", out, Shape{2});
  PSGD_CHECK(x.numel() > 0, "tensor_min_max: empty tensor");
  PSGD_DISPATCH(ctx, tensor_min_max, x, out);
}

void quantize_weights(Context& ctx, const Tensor& x, float delta, int levels, const Tensor& y) {
  check_devices(ctx, "quantize_weights", {&x, &y});
  check_float32("quantize_weights", {&x, &y});
  check_same_shape("quantize_weights", x, y);
  PSGD_CHECK(levels >= 1 && delta >= 0.0f, "quantize_weights: levels ", levels, " and delta ",
             delta, " are invalid");
  PSGD_DISPATCH(ctx, quantize_weights, x, delta, levels, y);
}

void quantize_activations(Context& ctx, const Tensor& x, float delta, int levels, const Tensor& y) {
  check_devices(ctx, "quantize_activations", {&x, &y});
  check_activations("quantize_activations", {&x, &y});
  check_same_shape("quantize_activations", x, y);
  PSGD_CHECK(levels >= 1 && delta >= 0.0f, "quantize_activations: levels ", levels, " and delta ",
             delta, " are invalid");
  PSGD_DISPATCH(ctx, quantize_activations, x, delta, levels, y);
}

// ---- The fused optimizer step ------------------------------------------------------------------
namespace {
// The table is validated once, where it is built (the host copy); here only its shape.
void check_table(const char* op, const Tensor& weights, std::initializer_list<const Tensor*> same,
                 const Tensor& segments, const Tensor& ranges) {
  check_rank(op, "weights", weights, 1);
  for (const Tensor* t : same) check_same_shape(op, weights, *t);
  check_rank(op, "segments", segments, 2);
  PSGD_CHECK(segments.dtype == DType::I32 && segments.shape[1] == kSegmentFields, op,
             ": the segment table must be int32 (tensors, ", int{kSegmentFields}, "), got ",
             segments.shape.str());
  PSGD_CHECK(ranges.numel() == 0 || (ranges.shape.rank() == 2 && ranges.shape[1] == 2), op,
             ": ranges must be (tensors, 2), got ", ranges.shape.str());
}

void check_step_values(const char* op, const Tensor& hyper, const Tensor& steps) {
  check_shape(op, "hyper", hyper, Shape{kHyperFields});
  check_shape(op, "steps", steps, Shape{1});
  PSGD_CHECK(hyper.dtype == DType::F32 && steps.dtype == DType::F64, op,
             ": hyper is float32 and steps float64");
}
}  // namespace

void update_weight_ranges(Context& ctx, const Tensor& weights, const Tensor& segments,
                          const Tensor& ranges, const Tensor& partials, bool first) {
  check_devices(ctx, "update_weight_ranges", {&weights, &segments, &ranges, &partials});
  check_table("update_weight_ranges", weights, {}, segments, ranges);
  check_float32("update_weight_ranges", {&partials});
  PSGD_CHECK(partials.shape.rank() == 2 && partials.shape[1] == 2,
             "update_weight_ranges: ", "partials must be (chunks, 2), got ", partials.shape.str());
  if (ranges.numel() == 0) return;
  PSGD_DISPATCH(ctx, update_weight_ranges, weights, segments, ranges, partials, first);
}

int64_t number_range_chunks(int32_t* table, int64_t rows) {
  int64_t chunks = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int32_t* row = table + r * kSegmentFields;
    PSGD_CHECK(chunks <= INT32_MAX, "too many quantized values for the range table");
    row[kSegmentFirstChunk] = static_cast<int32_t>(chunks);
    if (row[kSegmentRange] >= 0) chunks += weight_range_chunks(row[kSegmentCount]);
  }
  return chunks;
}

void set_step_values(Context& ctx, const Tensor& hyper, const Tensor& steps, float lr,
                     double steps_done) {
  check_devices(ctx, "set_step_values", {&hyper, &steps});
  check_step_values("set_step_values", hyper, steps);
  PSGD_DISPATCH(ctx, set_step_values, hyper, steps, lr, steps_done);
}

void adam_advance(Context& ctx, const Tensor& hyper, const Tensor& steps, double beta1,
                  double beta2) {
  check_devices(ctx, "adam_advance", {&hyper, &steps});
  check_step_values("adam_advance", hyper, steps);
  PSGD_CHECK(beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 && beta2 < 1.0,
             "Adam's betas must lie in [0, 1), got ", beta1, " and ", beta2);
  PSGD_DISPATCH(ctx, adam_advance, hyper, steps, beta1, beta2);
}

void psgd_sgd_step(Context& ctx, const Tensor& weights, const Tensor& grads, const Tensor& momentum,
                   const Tensor& segments, const Tensor& ranges, const Tensor& hyper, SgdStep h) {
  check_devices(ctx, "psgd_sgd_step", {&weights, &grads, &momentum, &segments, &ranges, &hyper});
  check_table("psgd_sgd_step", weights, {&grads, &momentum}, segments, ranges);
  check_shape("psgd_sgd_step", "hyper", hyper, Shape{kHyperFields});
  PSGD_DISPATCH(ctx, psgd_sgd_step, weights, grads, momentum, segments, ranges, hyper, h);
}

void psgd_adam_step(Context& ctx, const Tensor& weights, const Tensor& grads, const Tensor& m,
                    const Tensor& v, const Tensor& segments, const Tensor& ranges,
                    const Tensor& hyper, AdamStep h) {
  check_devices(ctx, "psgd_adam_step", {&weights, &grads, &m, &v, &segments, &ranges, &hyper});
  check_table("psgd_adam_step", weights, {&grads, &m, &v}, segments, ranges);
  check_shape("psgd_adam_step", "hyper", hyper, Shape{kHyperFields});
  PSGD_DISPATCH(ctx, psgd_adam_step, weights, grads, m, v, segments, ranges, hyper, h);
}

}  // namespace psgd::ops
