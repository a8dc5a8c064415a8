// Validation and device dispatch for every op in kernels/ops.h. Shapes are checked here, once,
// for all backends; the implementations assume valid input.
#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>

#include "kernels/cpu/cpu_ops.h"
#ifdef PSGD_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

// Calls the op's twin for the context's device.
#ifdef PSGD_WITH_CUDA
#define PSGD_DISPATCH(ctx, op, ...) \
  ((ctx).device() == Device::CUDA ? cuda::op(__VA_ARGS__) : cpu::op(__VA_ARGS__))
#else
#define PSGD_DISPATCH(ctx, op, ...) cpu::op(__VA_ARGS__)
#endif

namespace psgd::ops {
namespace {

// Every defined tensor must live on the context's device.
void check_devices(const Context& ctx, const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    PSGD_CHECK(!t->defined() || t->device == ctx.device(), op, ": a tensor is on ",
               device_name(t->device), " but the context runs on ", device_name(ctx.device()));
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  PSGD_CHECK(a.shape == b.shape, op, ": shapes ", a.shape.str(), " and ", b.shape.str(),
             " differ");
}

Shape channel_shape(const Tensor& x) { return Shape{x.shape[1]}; }

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
  return cpu::conv2d_workspace_floats(ctx.threads(), x, w, g);
}

void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, Conv2dGeometry g,
                    const Tensor& y) {
  check_devices(ctx, "conv2d_forward", {&x, &w, &y});
  check_shape("conv2d_forward", "output", y, conv2d_output_shape(x.shape, w.shape, g));
  PSGD_DISPATCH(ctx, conv2d_forward, ctx, x, w, g, y);
}

void conv2d_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw) {
  check_devices(ctx, "conv2d_backward", {&x, &w, &dy, &dx, &dw});
  check_shape("conv2d_backward", "dy", dy, conv2d_output_shape(x.shape, w.shape, g));
  check_shape("conv2d_backward", "dw", dw, w.shape);
  if (dx.defined()) check_shape("conv2d_backward", "dx", dx, x.shape);
  PSGD_DISPATCH(ctx, conv2d_backward, ctx, x, w, dy, g, dx, dx_mode, dw);
}

// ---- Batch normalisation ----------------------------------------------------------------------
namespace {
void check_batch_norm(const char* op, const Tensor& x, std::initializer_list<const Tensor*> per_c) {
  PSGD_CHECK(x.shape.rank() == 2 || x.shape.rank() == 4, op, ": input must be 2-D or 4-D, got ",
             x.shape.str());
  for (const Tensor* t : per_c) check_shape(op, "a per-channel tensor", *t, channel_shape(x));
}
}  // namespace

void batch_norm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, BatchNormParams p, const Tensor& y,
                              const Tensor& saved_mean, const Tensor& saved_invstd) {
  const char* op = "batch_norm_forward_train";
  check_devices(ctx, op, {&x, &gamma, &beta, &running_mean, &running_var, &y, &saved_mean,
                          &saved_invstd});
  check_batch_norm(op, x, {&gamma, &beta, &running_mean, &running_var, &saved_mean,
                           &saved_invstd});
  check_same_shape(op, x, y);
  PSGD_CHECK(x.numel() / x.shape[1] > 1, op,
             ": training needs more than one value per channel, got input ", x.shape.str());
  PSGD_DISPATCH(ctx, batch_norm_forward_train, x, gamma, beta, running_mean, running_var, p, y, saved_mean,
                                saved_invstd);
}

void batch_norm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma,
                             const Tensor& beta, const Tensor& running_mean,
                             const Tensor& running_var, BatchNormParams p, const Tensor& y) {
  const char* op = "batch_norm_forward_eval";
  check_devices(ctx, op, {&x, &gamma, &beta, &running_mean, &running_var, &y});
  check_batch_norm(op, x, {&gamma, &beta, &running_mean, &running_var});
  check_same_shape(op, x, y);
  PSGD_DISPATCH(ctx, batch_norm_forward_eval, x, gamma, beta, running_mean, running_var, p, y);
}

void batch_norm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                         const Tensor& relu_y) {
  const char* op = "batch_norm_backward";
  check_devices(ctx, op, {&x, &dy, &gamma, &saved_mean, &saved_invstd, &dx, &dgamma, &dbeta, &relu_y});
  check_batch_norm(op, x, {&gamma, &saved_mean, &saved_invstd, &dgamma, &dbeta});
  check_same_shape(op, x, dy);
  if (dx.defined()) check_same_shape(op, x, dx);
  if (relu_y.defined()) check_same_shape(op, x, relu_y);
  PSGD_DISPATCH(ctx, batch_norm_backward, x, dy, gamma, saved_mean, saved_invstd, dx, dx_mode, dgamma, dbeta,
                relu_y);
}

namespace {
Shape moments_shape(const Tensor& x) { return Shape{2, x.shape[1]}; }

void check_sums(const char* op, const Tensor& sums, const Shape& shape) {
  check_shape(op, "sums", sums, shape);
  PSGD_CHECK(sums.dtype == DType::F64, op, ": the sums must be float64");
}
}  // namespace

void batch_norm_moments(Context& ctx, const Tensor& x, const Tensor& shift, const Tensor& moments) {
  const char* op = "batch_norm_moments";
  check_devices(ctx, op, {&x, &shift, &moments});
  check_batch_norm(op, x, {&shift});
  check_sums(op, moments, moments_shape(x));
  PSGD_DISPATCH(ctx, batch_norm_moments, x, shift, moments);
}

void batch_norm_stats(Context& ctx, const Tensor& shift, const Tensor& moments, int64_t count,
                      BatchNormParams p, const Tensor& running_mean, const Tensor& running_var,
                      const Tensor& mean, const Tensor& invstd) {
  const char* op = "batch_norm_stats";
  check_devices(ctx, op, {&shift, &moments, &running_mean, &running_var, &mean, &invstd});
  check_rank(op, "shift", shift, 1);
  for (const Tensor* t : {&running_mean, &running_var, &mean, &invstd})
    check_shape(op, "a per-channel tensor", *t, shift.shape);
  check_sums(op, moments, Shape{2, shift.shape[0]});
  PSGD_CHECK(count > 1, op, ": training needs more than one value per channel, got ", count);
  PSGD_DISPATCH(ctx, batch_norm_stats, shift, moments, count, p, running_mean, running_var, mean, invstd);
}

void batch_norm_normalize(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& mean, const Tensor& invstd, const Tensor& y) {
  const char* op = "batch_norm_normalize";
  check_devices(ctx, op, {&x, &gamma, &beta, &mean, &invstd, &y});
  check_batch_norm(op, x, {&gamma, &beta, &mean, &invstd});
  check_same_shape(op, x, y);
  PSGD_DISPATCH(ctx, batch_norm_normalize, x, gamma, beta, mean, invstd, y);
}

void batch_norm_backward_reduce(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& mean,
                                const Tensor& invstd, const Tensor& sums, const Tensor& dgamma,
                                const Tensor& dbeta) {
  const char* op = "batch_norm_backward_reduce";
  check_devices(ctx, op, {&x, &dy, &mean, &invstd, &sums, &dgamma, &dbeta});
  check_batch_norm(op, x, {&mean, &invstd, &dgamma, &dbeta});
  check_sums(op, sums, moments_shape(x));
  check_same_shape(op, x, dy);
  PSGD_DISPATCH(ctx, batch_norm_backward_reduce, x, dy, mean, invstd, sums, dgamma, dbeta);
}

void batch_norm_backward_input(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                               int64_t count, const Tensor& dx, GradMode dx_mode) {
  const char* op = "batch_norm_backward_input";
  check_devices(ctx, op, {&x, &dy, &gamma, &mean, &invstd, &sums, &dx});
  check_batch_norm(op, x, {&gamma, &mean, &invstd});
  check_sums(op, sums, moments_shape(x));
  check_same_shape(op, x, dy);
  check_same_shape(op, x, dx);
  PSGD_CHECK(count >= x.numel() / x.shape[1], op, ": ", count,
             " values per channel is fewer than this rank holds");
  PSGD_DISPATCH(ctx, batch_norm_backward_input, x, dy, gamma, mean, invstd, sums, count, dx, dx_mode);
}

// ---- Elementwise ------------------------------------------------------------------------------
void relu_forward(Context& ctx, const Tensor& x, const Tensor& y) {
  check_devices(ctx, "relu_forward", {&x, &y});
  check_same_shape("relu_forward", x, y);
  PSGD_DISPATCH(ctx, relu_forward, x, y);
}

void relu_backward(Context& ctx, const Tensor& y, const Tensor& dy, const Tensor& dx,
                   GradMode dx_mode) {
  check_devices(ctx, "relu_backward", {&y, &dy, &dx});
  check_same_shape("relu_backward", y, dy);
  check_same_shape("relu_backward", y, dx);
  PSGD_DISPATCH(ctx, relu_backward, y, dy, dx, dx_mode);
}

void add_forward(Context& ctx, const Tensor& a, const Tensor& b, const Tensor& y) {
  check_devices(ctx, "add_forward", {&a, &b, &y});
  check_same_shape("add_forward", a, b);
  check_same_shape("add_forward", a, y);
  PSGD_DISPATCH(ctx, add_forward, a, b, y);
}

void add_relu_forward(Context& ctx, const Tensor& a, const Tensor& b, const Tensor& y) {
  check_devices(ctx, "add_relu_forward", {&a, &b, &y});
  check_same_shape("add_relu_forward", a, b);
  check_same_shape("add_relu_forward", a, y);
  PSGD_DISPATCH(ctx, add_relu_forward, a, b, y);
}

void grad_pass(Context& ctx, const Tensor& src, const Tensor& dst, GradMode mode) {
  check_devices(ctx, "grad_pass", {&src, &dst});
  check_same_shape("grad_pass", src, dst);
  PSGD_DISPATCH(ctx, grad_pass, src, dst, mode);
}

// ---- Pooling ----------------------------------------------------------------------------------
Shape pool2d_output_shape(const Shape& x, Pool2dGeometry g) {
  PSGD_CHECK(x.rank() == 4, "pool2d: input must be 4-D, got ", x.str());
  PSGD_CHECK(g.kernel >= 1 && g.stride >= 1, "pool2d: kernel ", g.kernel, " and stride ",
             g.stride, " must be positive");
  PSGD_CHECK(x[2] >= g.kernel && x[3] >= g.kernel, "pool2d: kernel ", g.kernel,
             " larger than input ", x.str());
  return Shape{x[0], x[1], (x[2] - g.kernel) / g.stride + 1, (x[3] - g.kernel) / g.stride + 1};
}

void avg_pool_forward(Context& ctx, const Tensor& x, Pool2dGeometry g, const Tensor& y) {
  check_devices(ctx, "avg_pool_forward", {&x, &y});
  check_shape("avg_pool_forward", "output", y, pool2d_output_shape(x.shape, g));
  PSGD_DISPATCH(ctx, avg_pool_forward, x, g, y);
}

void avg_pool_backward(Context& ctx, const Tensor& dy, Pool2dGeometry g, const Tensor& dx,
                       GradMode dx_mode) {
  check_devices(ctx, "avg_pool_backward", {&dy, &dx});
  check_shape("avg_pool_backward", "dy", dy, pool2d_output_shape(dx.shape, g));
  PSGD_DISPATCH(ctx, avg_pool_backward, dy, g, dx, dx_mode);
}

void max_pool_forward(Context& ctx, const Tensor& x, Pool2dGeometry g, const Tensor& y) {
  check_devices(ctx, "max_pool_forward", {&x, &y});
  check_shape("max_pool_forward", "output", y, pool2d_output_shape(x.shape, g));
  PSGD_DISPATCH(ctx, max_pool_forward, x, g, y);
}

void max_pool_backward(Context& ctx, const Tensor& x, const Tensor& dy, Pool2dGeometry g,
                       const Tensor& dx, GradMode dx_mode) {
  check_devices(ctx, "max_pool_backward", {&x, &dy, &dx});
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

void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y) {
  check_devices(ctx, "linear_forward", {&x, &w, &b, &y});
  const Tensor x2 = as_matrix(x);
  check_linear("linear_forward", x2, w, b);
  check_shape("linear_forward", "output", y, Shape{x2.shape[0], w.shape[0]});
#ifdef PSGD_WITH_CUDA
  if (ctx.device() == Device::CUDA) return cuda::linear_forward(ctx, x2, w, b, y);
#endif
  cpu::linear_forward(x2, w, b, y);
}

void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, GradMode dx_mode, const Tensor& dw, const Tensor& db) {
  check_devices(ctx, "linear_backward", {&x, &w, &dy, &dx, &dw, &db});
  const Tensor x2 = as_matrix(x);
  check_linear("linear_backward", x2, w, db);
  check_shape("linear_backward", "dy", dy, Shape{x2.shape[0], w.shape[0]});
  check_shape("linear_backward", "dw", dw, w.shape);
  if (dx.defined()) check_same_shape("linear_backward", x, dx);
#ifdef PSGD_WITH_CUDA
  if (ctx.device() == Device::CUDA)
    return cuda::linear_backward(ctx, x2, w, dy, as_matrix(dx), dx_mode, dw, db);
#endif
  cpu::linear_backward(x2, w, dy, as_matrix(dx), dx_mode, dw, db);
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
  check_same_shape("dropout_forward", x, y);
  check_mask_index("dropout_forward", mask_index);
  PSGD_CHECK(p >= 0.0f && p <= 1.0f, "dropout: probability ", p, " outside [0, 1]");
  PSGD_DISPATCH(ctx, dropout_forward, x, p, seed, stream, y, mask_index);
}

void dropout_backward(Context& ctx, const Tensor& dy, float p, uint64_t seed, uint64_t stream,
                      const Tensor& dx, GradMode dx_mode, const Tensor& mask_index) {
  check_devices(ctx, "dropout_backward", {&dy, &dx, &mask_index});
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
  check_labels(op, logits, labels);
  check_shape(op, "loss", loss, Shape{1});
  check_same_shape(op, logits, dlogits);
  PSGD_DISPATCH(ctx, softmax_cross_entropy, logits, labels, loss, dlogits);
}

int64_t topk_correct(Context& ctx, const Tensor& logits, const Tensor& labels, int k) {
  check_devices(ctx, "topk_correct", {&logits, &labels});
  check_labels("topk_correct", logits, labels);
  PSGD_CHECK(k >= 1, "topk_correct: k must be positive, got ", k);
  return PSGD_DISPATCH(ctx, topk_correct, logits, labels, k);
}

void accumulate_metrics(Context& ctx, const Tensor& logits, const Tensor& labels,
                        const Tensor& loss, const Tensor& totals) {
  check_devices(ctx, "accumulate_metrics", {&logits, &labels, &loss, &totals});
  check_labels("accumulate_metrics", logits, labels);
  check_shape("accumulate_metrics", "loss", loss, Shape{1});
  check_shape("accumulate_metrics", "totals", totals, Shape{kMetricFields});
  PSGD_CHECK(totals.dtype == DType::F64, "accumulate_metrics: totals must be float64");
  PSGD_DISPATCH(ctx, accumulate_metrics, logits, labels, loss, totals);
}

// ---- Quantization -----------------------------------------------------------------------------
void tensor_min_max(Context& ctx, const Tensor& x, const Tensor& out) {
  check_devices(ctx, "tensor_min_max", {&x, &out});
  check_shape("tensor_min_max", "out", out, Shape{2});
  PSGD_CHECK(x.numel() > 0, "tensor_min_max: empty tensor");
  PSGD_DISPATCH(ctx, tensor_min_max, x, out);
}

void quantize_weights(Context& ctx, const Tensor& x, float delta, int levels, const Tensor& y) {
  check_devices(ctx, "quantize_weights", {&x, &y});
  check_same_shape("quantize_weights", x, y);
  PSGD_CHECK(levels >= 1 && delta >= 0.0f, "quantize_weights: levels ", levels, " and delta ",
             delta, " are invalid");
  PSGD_DISPATCH(ctx, quantize_weights, x, delta, levels, y);
}

void quantize_activations(Context& ctx, const Tensor& x, float delta, int levels,
                          const Tensor& y) {
  check_devices(ctx, "quantize_activations", {&x, &y});
  check_same_shape("quantize_activations", x, y);
  PSGD_CHECK(levels >= 1 && delta >= 0.0f, "quantize_activations: levels ", levels,
             " and delta ", delta, " are invalid");
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
}  // namespace

void update_weight_ranges(Context& ctx, const Tensor& weights, const Tensor& segments,
                          const Tensor& ranges, bool first) {
  check_devices(ctx, "update_weight_ranges", {&weights, &segments, &ranges});
  check_table("update_weight_ranges", weights, {}, segments, ranges);
  if (ranges.numel() == 0) return;
  PSGD_DISPATCH(ctx, update_weight_ranges, weights, segments, ranges, first);
}

void adam_hyper(float lr, float beta1, float beta2, int64_t step, float* hyper) {
  PSGD_CHECK(step >= 1, "Adam steps count from 1, got ", step);
  // PyTorch's Adam: step_size = lr / (1 - beta1^t); denom = sqrt(v) / sqrt(1 - beta2^t) + eps.
  const double t = static_cast<double>(step);
  hyper[kHyperLr] = lr;
  hyper[kHyperAdamStepSize] = static_cast<float>(lr / (1.0 - std::pow(beta1, t)));
  hyper[kHyperAdamRootBias2] = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, t)));
}

void psgd_sgd_step(Context& ctx, const Tensor& weights, const Tensor& grads,
                   const Tensor& momentum, const Tensor& segments, const Tensor& ranges,
                   const Tensor& hyper, SgdStep h) {
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
