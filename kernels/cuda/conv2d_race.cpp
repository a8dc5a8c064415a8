// The race at planning time between cuDNN's choice for a shape and the alternatives that may run
// instead, per direction: psgd's direct kernel (forward and data gradient) and tensor-core kernels
// (all three), where they serve the shape and the numerics, and for bf16 activations cuDNN's
// float32 kernels on widened copies (all three). Each candidate is timed as a training step runs
// it, on the search's buffers, and the fastest runs.
#include <chrono>
#include <functional>
#include <limits>
#include <vector>

#include "engine/captured_graph.h"
#include "kernels/cuda/conv2d_plan.h"
#include "kernels/cuda/cuda_ops.h"

namespace psgd::cuda {
namespace {

using Conv = Numerics::Conv;

// Microseconds per call of `run` as a training step runs it, inside a graph: 5 calls captured
// once, the graph replayed 3 times between host clock readings after an untimed replay. The
// host's cost of each call (cuDNN's is many microseconds) stays out, as it does in training.
double microseconds_per_call(const Context& ctx, const std::function<void()>& run) {
  constexpr int kCalls = 5, kReplays = 3;
  const CapturedGraph graph = CapturedGraph::capture(ctx, [&] {
    for (int i = 0; i < kCalls; ++i) run();
  });
  graph.replay(ctx);
  ctx.synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kReplays; ++i) graph.replay(ctx);
  ctx.synchronize();
  const std::chrono::duration<double, std::micro> elapsed =
      std::chrono::steady_clock::now() - start;
  return elapsed.count() / (kCalls * kReplays);
}

// One way to run a direction.
struct Candidate {
  ConvRoute route;
  std::function<void()> run;
};

// The route of the fastest candidate; `otherwise` where there is none.
ConvRoute fastest(const Context& ctx, const std::vector<Candidate>& candidates,
                  ConvRoute otherwise) {
  double best = std::numeric_limits<double>::infinity();
  for (const Candidate& c : candidates) {
    const double us = microseconds_per_call(ctx, c.run);
    if (us < best) {
      best = us;
      otherwise = c.route;
    }
  }
  return otherwise;
}

// The float32 plan of a bf16 shape: tensor cores whatever tf32 says (exact on bf16 values, as the
// bf16 kernels' are), algorithms that multiply the operands untransformed, cuDNN's choice alone.
std::unique_ptr<ConvPlan> widened_plan(const Context& ctx, const ConvKey& k, const Shape& x_shape,
                                       const Shape& w_shape, const Shape& y_shape) {
  ConvKey f = k;
  f.activations = DType::F32;
  f.tf32 = true;
  f.conv = Conv::Cudnn;
  f.untransformed = true;
  return find_algorithms(ctx, f, x_shape, w_shape, y_shape);
}

// The float32 copies and workspace a widened candidate runs on in the race.
struct WidenedScratch {
  WidenedScratch(const ConvPlan& f, const Shape& x, const Shape& w, const Shape& y)
      : w32(w.numel() * sizeof(float)),
        x32(x.numel() * sizeof(float)),
        y32(y.numel() * sizeof(float)),
        dw32(w.numel() * sizeof(float)),
        workspace(f.workspace_bytes),
        buffers{device_view(w32.ptr, w, DType::F32), device_view(x32.ptr, x, DType::F32),
                device_view(y32.ptr, y, DType::F32), workspace.ptr} {}
  Scratch w32, x32, y32, dw32, workspace;
  WidenedBuffers buffers;
};

}  // namespace

void race_alternatives(const Context& ctx, const ConvKey& k, ConvPlan& p, const Shape& x_shape,
                       const Shape& w_shape, const Shape& y_shape, const TimingBuffers* timing) {
  const ops::Conv2dGeometry geometry{k.stride, k.pad};
  const bool direct = conv2d_direct_supported(w_shape, geometry);
  const bool tensor_cores = tensor_cores_allowed(k) && conv2d_tensor_core_available(k.device);
  const bool tensor_core = tensor_cores && conv2d_tensor_core_supported(x_shape, w_shape, geometry);
  const bool tensor_core_data =
      tensor_cores && conv2d_tensor_core_data_supported(x_shape, w_shape, geometry);
  const bool tensor_core_filter =
      tensor_cores && conv2d_tensor_core_filter_supported(x_shape, w_shape, geometry);
  const bool bf16 = k.activations == DType::BF16;
  const bool cudnn_data = p.missing_backward_data.empty();
  // Where cuDNN has no data-gradient algorithm, psgd's kernels stand in where they serve, whatever
  // the mode; deterministic runs (no timing) keep that and the rest of cuDNN's choice.
  const ConvRoute data_fallback = cudnn_data         ? ConvRoute::Cudnn
                                  : direct           ? ConvRoute::Direct
                                  : tensor_core_data ? ConvRoute::TensorCore
                                                     : ConvRoute::Cudnn;
  p.data_route = data_fallback;
  switch (k.conv) {
    case Conv::Cudnn:
      return;
    case Conv::Direct:
      if (direct) p.forward_route = p.data_route = ConvRoute::Direct;
      return;
    case Conv::TensorCore:
      if (tensor_core) p.forward_route = ConvRoute::TensorCore;
      if (tensor_core_data) p.data_route = ConvRoute::TensorCore;
      if (tensor_core_filter) p.filter_route = ConvRoute::TensorCore;
      return;
    case Conv::Widened:
      if (!bf16) return;
      p.widened = widened_plan(ctx, k, x_shape, w_shape, y_shape);
      p.forward_route = p.filter_route = ConvRoute::Widened;
      p.data_route = p.widened->missing_backward_data.empty() ? ConvRoute::Widened : data_fallback;
      return;
    case Conv::Auto:
      break;
  }
  // The race runs cuDNN on the search's workspace, which its final choice may outgrow.
  if (!timing || p.workspace_bytes > timing->workspace_bytes) return;
  const Tensor x = device_view(timing->x.ptr, x_shape, k.activations),
               y = device_view(timing->y.ptr, y_shape, k.activations),
               dx = device_view(timing->dx.ptr, x_shape, k.activations),
               filter = device_view(timing->w.ptr, w_shape, k.activations),
               dw = device_view(timing->dw.ptr, w_shape, k.activations);
  if (bf16) p.widened = widened_plan(ctx, k, x_shape, w_shape, y_shape);
  const bool widened_data = bf16 && p.widened->missing_backward_data.empty();
  const auto scratch =
      bf16 ? std::make_unique<WidenedScratch>(*p.widened, x_shape, w_shape, y_shape) : nullptr;
  const Tensor dw32 = bf16 ? device_view(scratch->dw32.ptr, w_shape, DType::F32) : Tensor();
  void* workspace = timing->workspace.ptr;

  std::vector<Candidate> forward{
      {ConvRoute::Cudnn, [&] { cudnn_forward(ctx, p, x.data, filter.data, workspace, y.data); }}};
  if (direct)
    forward.push_back(
        {ConvRoute::Direct, [&] { conv2d_direct_forward(x, filter.data, w_shape, y); }});
  if (tensor_core)
    forward.push_back({ConvRoute::TensorCore,
                       [&] { conv2d_tensor_core_forward(x, filter.data, w_shape, k.stride, y); }});
  if (bf16)
    forward.push_back({ConvRoute::Widened,
                       [&] { widened_forward(ctx, *p.widened, x, filter, scratch->buffers, y); }});
  p.forward_route = fastest(ctx, forward, ConvRoute::Cudnn);

  // The bf16 kernels' dw comes out in bf16 and is widened into the float32 dw.
  std::vector<Candidate> filter_gradient{{ConvRoute::Cudnn, [&] {
                                            cudnn_backward_filter(ctx, p, x.data, y.data, workspace,
                                                                  dw.data);
                                            if (bf16) cast(dw, dw32);
                                          }}};
  const int64_t partial_floats =
      tensor_core_filter ? conv2d_tensor_core_filter_workspace_floats(x_shape, w_shape, k.stride)
                         : 0;
  const Scratch partial_sums(sizeof(float) * size_t(partial_floats));
  const Tensor partials = device_view(partial_sums.ptr, Shape{partial_floats}, DType::F32);
  if (tensor_core_filter)
    filter_gradient.push_back({ConvRoute::TensorCore, [&] {
                                 conv2d_tensor_core_backward_filter(x, y, w_shape, k.stride,
                                                                    partials, bf16 ? dw32 : dw);
                               }});
  if (bf16)
    filter_gradient.push_back(
        {ConvRoute::Widened,
         [&] { widened_backward_filter(ctx, *p.widened, x, y, scratch->buffers, dw, dw32); }});
  p.filter_route = fastest(ctx, filter_gradient, ConvRoute::Cudnn);

  std::vector<Candidate> data_gradient;
  if (cudnn_data)
    data_gradient.push_back(
        {ConvRoute::Cudnn,
         [&] { cudnn_backward_data(ctx, p, filter.data, y.data, workspace, 0.0f, dx.data); }});
  if (direct)
    data_gradient.push_back(
        {ConvRoute::Direct,
         [&] { conv2d_direct_backward_data(y, filter.data, w_shape, GradMode::Overwrite, dx); }});
  if (tensor_core_data)
    data_gradient.push_back({ConvRoute::TensorCore, [&] {
                               conv2d_tensor_core_backward_data(y, filter.data, w_shape, k.stride,
                                                                GradMode::Overwrite, dx);
                             }});
  if (widened_data)
    data_gradient.push_back({ConvRoute::Widened, [&] {
                               widened_backward_data(ctx, *p.widened, filter, y, false,
                                                     scratch->buffers, GradMode::Overwrite, dx);
                             }});
  p.data_route = fastest(ctx, data_gradient, data_fallback);
  if (!p.any_widened()) p.widened.reset();
}

}  // namespace psgd::cuda
