// The op library: stateless functions over Tensors, one signature for every device. Each op
// checks shapes and devices, then dispatches on ctx.device() to its CPU implementation
// (kernels/cpu) or its CUDA twin (kernels/cuda). Ops never allocate: scratch memory comes from
// the context's workspace, sized beforehand through the *_workspace_floats functions.
//
// Element types: activations and their gradients (x, y, dx, dy, logits, dlogits) are float32 or
// bfloat16, alike within one call; parameters, their gradients, statistics and losses are always
// float32. Ops compute in float32 and round once per stored bfloat16 value. Convolutions and
// linear layers take activations of the context's activation_dtype(), for which their workspace
// is sized.
#pragma once

#include <cstdint>
#include <span>

#include "engine/context.h"
#include "engine/tensor.h"

namespace psgd::ops {

// How an op writes a gradient: Overwrite for the first contribution to a tensor in a step,
// Accumulate where a tensor feeds several consumers and gradients are summed.
enum class GradMode : uint8_t { Overwrite, Accumulate };

// ---- Element types ----------------------------------------------------------------------------
// dst = src converted between float32 and bfloat16 (rounding to nearest even), or copied where
// the types are the same (on a GPU in the stream's order, so that a captured step records it).
void cast(Context& ctx, const Tensor& src, const Tensor& dst);

// ---- Convolution (no bias; groups = 1) --------------------------------------------------------
struct Conv2dGeometry {
  int stride = 1;
  int pad = 0;
};

Shape conv2d_output_shape(const Shape& x, const Shape& w, Conv2dGeometry g);
// Workspace for the context's device and thread count.
int64_t conv2d_workspace_floats(const Context& ctx, const Shape& x, const Shape& w,
                                Conv2dGeometry g);
// x (N, C, H, W), w (K, C, R, S) -> y (N, K, P, Q)
void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, Conv2dGeometry g,
                    const Tensor& y);
// dw is overwritten; dx (when defined) follows `dx_mode`. With bf16 activations the weights are
// multiplied as their bf16 roundings and dw comes at bf16 precision (cuDNN's filter gradient has
// the activations' type), as under PyTorch's autocast.
void conv2d_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw);

// ---- Batch normalisation over (N, H, W) per channel, PyTorch semantics ------------------------
struct BatchNormParams {
  float momentum = 0.1f;  // running = (1 - momentum) * running + momentum * batch
  float eps = 1e-5f;
  bool relu = false;  // a ReLU fused onto the output: y = max(0, BN(x)) (forward passes)
};
// Workspace for any of the batch_norm_* ops below on x (the GPU's split reductions).
int64_t batch_norm_workspace_floats(const Context& ctx, const Shape& x);
// Training: normalises with the biased batch variance, updates running_var with the unbiased
// one, and saves the batch mean and 1/sqrt(var + eps) (C) for the backward pass. With a
// `residual` (x's shape and type), y = BN(x) + residual before the fused ReLU: a residual join
// and its ReLU in BN's pass (backward: batch_norm_backward with the ReLU's output as the mask,
// {.output = y}, and relu_backward into the residual's gradient).
void batch_norm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, BatchNormParams p, const Tensor& y,
                              const Tensor& saved_mean, const Tensor& saved_invstd,
                              const Tensor& residual = {});
void batch_norm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             BatchNormParams p, const Tensor& y, const Tensor& residual = {});
// Where batch_norm_backward learns which outputs of a fused ReLU were open: from the ReLU's
// `output` (open where positive), or recomputed from x with the forward's `beta` (C; a ReLU fused
// without a residual), which reads a tensor fewer and is exact where x, gamma, beta and the saved
// statistics are the training forward's own. Neither: no ReLU.
struct ReluMaskSource {
  Tensor output;
  Tensor beta;
};
// Backward of the training forward; dgamma and dbeta are overwritten. With a fused ReLU (`relu`),
// dy is the gradient of the ReLU's output and counts only where the ReLU was open.
void batch_norm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                         const ReluMaskSource& relu = {});

// The same in stages, for statistics summed over ranks (synchronised BN): forward is moments ->
// (sum over ranks) -> stats -> normalize, backward is backward_reduce -> (sum over ranks) ->
// backward_input. The sums are float64, so that summing them over ranks in any order gives, to
// float32 rounding, the statistics of one rank holding the whole batch.
// moments (2, C) float64 = {sum (x - shift), sum (x - shift)^2} over this rank's x. `shift` (C)
// must be the same on every rank (the running mean serves) and near the mean, against
// cancellation.
void batch_norm_moments(Context& ctx, const Tensor& x, const Tensor& shift, const Tensor& moments);
// From moments over `count` values per channel: the batch mean and 1/sqrt(var + eps) (C), and
// the running estimates updated as batch_norm_forward_train does. `shift` may alias running_mean.
void batch_norm_stats(Context& ctx, const Tensor& shift, const Tensor& moments, int64_t count,
                      BatchNormParams p, const Tensor& running_mean, const Tensor& running_var,
                      const Tensor& mean, const Tensor& invstd);
// y = (x - mean) * invstd * gamma + beta.
void batch_norm_normalize(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& mean, const Tensor& invstd, const Tensor& y);
// sums (2, C) float64 = {sum dy, sum dy * xhat} over this rank's values, and this rank's share
// of the parameter gradients: dbeta = sum dy, dgamma = sum dy * xhat (overwritten).
void batch_norm_backward_reduce(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& mean,
                                const Tensor& invstd, const Tensor& sums, const Tensor& dgamma,
                                const Tensor& dbeta);
// dx from sums (2, C) over `count` values per channel.
void batch_norm_backward_input(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                               int64_t count, const Tensor& dx, GradMode dx_mode);

// ---- Elementwise ------------------------------------------------------------------------------
void relu_forward(Context& ctx, const Tensor& x, const Tensor& y);
// Uses the output y: dx = dy where y > 0.
void relu_backward(Context& ctx, const Tensor& y, const Tensor& dy, const Tensor& dx,
                   GradMode dx_mode);
void add_forward(Context& ctx, const Tensor& a, const Tensor& b, const Tensor& y);
// y = max(0, a + b): a residual join and its ReLU in one pass (backward: relu_backward into
// each input's gradient).
void add_relu_forward(Context& ctx, const Tensor& a, const Tensor& b, const Tensor& y);
// dst = src (Overwrite) or dst += src (Accumulate): the backward of add, and gradient routing.
void grad_pass(Context& ctx, const Tensor& src, const Tensor& dst, GradMode mode);

// ---- Pooling (no padding) ---------------------------------------------------------------------
struct Pool2dGeometry {
  int kernel = 2;
  int stride = 2;
};
Shape pool2d_output_shape(const Shape& x, Pool2dGeometry g);
void avg_pool_forward(Context& ctx, const Tensor& x, Pool2dGeometry g, const Tensor& y);
void avg_pool_backward(Context& ctx, const Tensor& dy, Pool2dGeometry g, const Tensor& dx,
                       GradMode dx_mode);
// Ties go to the first maximum in row-major window order, as PyTorch.
void max_pool_forward(Context& ctx, const Tensor& x, Pool2dGeometry g, const Tensor& y);
void max_pool_backward(Context& ctx, const Tensor& x, const Tensor& dy, Pool2dGeometry g,
                       const Tensor& dx, GradMode dx_mode);

// ---- Linear: y = x w^T + b ------------------------------------------------------------------
// x (N, in) or (N, C, H, W) with C*H*W = in; w (out, in); b (out); y (N, out).
int64_t linear_workspace_floats(const Context& ctx, const Shape& x, const Shape& w);
void linear_forward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y);
// dw and db are overwritten; dx (when defined) follows `dx_mode`.
void linear_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, GradMode dx_mode, const Tensor& dw, const Tensor& db);

// ---- Dropout (inverted: kept elements scaled by 1 / (1 - p)) ----------------------------------
// Element i is dropped when rng::uniform(rng::stream_key(seed, stream), i) < p; the backward
// pass recomputes the same mask from the same (seed, stream), so nothing is stored. With
// `mask_index` (int32 (1), on the device) the stream is stream | mask_index[0], read where the
// kernel runs: a captured step then draws a new mask at each replay (see count_up).
void dropout_forward(Context& ctx, const Tensor& x, float p, uint64_t seed, uint64_t stream,
                     const Tensor& y, const Tensor& mask_index = {});
void dropout_backward(Context& ctx, const Tensor& dy, float p, uint64_t seed, uint64_t stream,
                      const Tensor& dx, GradMode dx_mode, const Tensor& mask_index = {});
// counter (int32 (1)) += 1, as an unsigned 32-bit count, on the device.
void count_up(Context& ctx, const Tensor& counter);

// ---- Loss and metrics -------------------------------------------------------------------------
// Mean softmax cross-entropy of logits (N, K) against int32 labels (N), forward and backward
// fused: writes the loss into `loss` (1) and d(loss)/d(logits) into `dlogits` (N, K).
void softmax_cross_entropy(Context& ctx, const Tensor& logits, const Tensor& labels,
                           const Tensor& loss, const Tensor& dlogits);
// How many rows have their label among the k largest logits (ties count against the label).
int64_t topk_correct(Context& ctx, const Tensor& logits, const Tensor& labels, int k);
// Metrics summed on the device, read only now and then (training every few steps, evaluation
// once per pass): totals (kMetricFields) float64 += {loss * N, rows whose label scores
// highest, rows whose label is among the min(5, K) highest (ties count against the label), N};
// loss (1) is the batch's mean loss.
enum MetricField : int {
  kMetricLossSum,
  kMetricCorrect,
  kMetricCorrectTop5,
  kMetricSamples,
  kMetricFields
};
void accumulate_metrics(Context& ctx, const Tensor& logits, const Tensor& labels,
                        const Tensor& loss, const Tensor& totals);

// ---- Quantization (kernels/quant_math.h holds the element arithmetic) ------------------------
// out (2) = {min over x, max over x}.
void tensor_min_max(Context& ctx, const Tensor& x, const Tensor& out);
// y = Q(x) on the grid -levels .. levels with step delta.
void quantize_weights(Context& ctx, const Tensor& x, float delta, int levels, const Tensor& y);
// y = delta * round(clamp(x / delta, 0, levels)): a quantizing ReLU. A bf16 y holds the
// nearest bf16 value of each level (delta * k needs up to `bits` significant bits).
void quantize_activations(Context& ctx, const Tensor& x, float delta, int levels, const Tensor& y);

// ---- The fused optimizer step ------------------------------------------------------------------
// What the PSG scaling does to one tensor's gradient.
enum class PsgTarget : int32_t {
  None,  // plain gradient
  Grid,  // g * lambda * |w - Q(w)|: pulls weights toward the quantization grid
  Zero,  // g * lambda * |w|: pulls weights toward zero (pruning)
};

// The optimizer's segment table: an int32 tensor (tensors, kSegmentFields), one row per
// trainable tensor of the flat buffers, built once and kept on the device, so that one launch
// updates every tensor and a captured step replays without host work.
enum SegmentField : int {
  kSegmentOffset,  // first element in the flat buffers
  kSegmentCount,   // elements
  kSegmentTarget,  // PsgTarget
  kSegmentLevels,  // L of the quantization grid (quantized tensors)
  kSegmentRange,   // row of the ranges table, or -1 for a tensor without a quantizer
  // update_weight_ranges on the GPU: the first of the row's chunks (kRangeChunk values each)
  // among all ranged rows' chunks in table order; a row without a range holds the count so far.
  // Filled by number_range_chunks.
  kSegmentFirstChunk,
  kSegmentFields
};

// The running quantizer ranges: ranges (R, 2) = {x_min, x_max} per quantized tensor. Folds each
// such segment's min(0, min w) and max(0, max w) in: `first` sets the ranges, later steps move
// them by momentum 0.1, as the reference's forward pass does. Two launches for all tensors on
// the GPU: each chunk of kRangeChunk elements of a ranged segment is reduced by its own block
// into `partials` ((weight_range_chunks summed over the ranged segments, 2) float32), then each
// range folds its chunks in order. The CPU does not use `partials`.
inline constexpr int64_t kRangeChunk = int64_t{1} << 13;
inline constexpr int64_t weight_range_chunks(int64_t count) {
  return (count + kRangeChunk - 1) / kRangeChunk;
}
void update_weight_ranges(Context& ctx, const Tensor& weights, const Tensor& segments,
                          const Tensor& ranges, const Tensor& partials, bool first);
// Fills kSegmentFirstChunk of a host table of `rows` rows; returns the number of chunks.
int64_t number_range_chunks(int32_t* table, int64_t rows);

// Step values are read from a small float tensor on the device, `hyper` (kHyperFields): the
// learning rate, written when it changes, and Adam's bias corrections, which adam_advance
// recomputes on the device each step, so that a captured step replays without a host write.
enum HyperField : int {
  kHyperLr,             // learning rate
  kHyperAdamStepSize,   // lr / (1 - beta1^t)
  kHyperAdamRootBias2,  // sqrt(1 - beta2^t)
  kHyperFields
};

struct SgdStep {
  float momentum = 0.0f, weight_decay = 0.0f, lambda = 0.0f;
  bool first = false;  // the momentum buffer starts as the first update, as PyTorch's SGD
};

struct AdamStep {
  // PyTorch's m = beta1 * m + (1 - beta1) * d: each factor is its double rounded once to float32,
  // so 1 - beta is not 1 - (float)beta (for beta2 = 0.999 they differ by 1.3e-5 of it).
  static AdamStep from(double beta1, double beta2, float eps, float weight_decay, float lambda) {
    return {static_cast<float>(beta1), static_cast<float>(beta2), static_cast<float>(1.0 - beta1),
            static_cast<float>(1.0 - beta2), eps, weight_decay, lambda};
  }
  // PyTorch's defaults, (0.9, 0.999) and 1e-8.
  float beta1 = 0.9f, beta2 = 0.999f;
  float one_minus_beta1 = static_cast<float>(1.0 - 0.9);
  float one_minus_beta2 = static_cast<float>(1.0 - 0.999);
  float eps = 1e-8f, weight_decay = 0.0f, lambda = 0.0f;
};
// Before a step: writes the learning rate into `hyper` and the count of steps done into `steps`
// (float64 (1)), in the order of the context's work. On a GPU that is a launch, which the host
// does not wait for, where a copy from the host would wait for the step before it.
void set_step_values(Context& ctx, const Tensor& hyper, const Tensor& steps, float lr,
                     double steps_done);
// Adam, before its step: counts the step in `steps` (float64 (1), the steps done) and writes
// hyper's bias corrections for it from hyper's learning rate (optim_math::adam_corrections).
void adam_advance(Context& ctx, const Tensor& hyper, const Tensor& steps, double beta1,
                  double beta2);

// One pass over every segment: g *= PSG scale (delta from the segment's range), d = g +
// weight_decay * w, then PyTorch's SGD (buf = d at the first step, buf = momentum * buf + d
// later; w -= lr * buf) ...
void psgd_sgd_step(Context& ctx, const Tensor& weights, const Tensor& grads, const Tensor& momentum,
                   const Tensor& segments, const Tensor& ranges, const Tensor& hyper, SgdStep h);
// ... or PyTorch's Adam (L2 decay added to the gradient, bias-corrected moments).
void psgd_adam_step(Context& ctx, const Tensor& weights, const Tensor& grads, const Tensor& m,
                    const Tensor& v, const Tensor& segments, const Tensor& ranges,
                    const Tensor& hyper, AdamStep h);

}  // namespace psgd::ops
