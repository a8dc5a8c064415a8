// The race at planning time between cuDNN's choice for a shape and the alternatives that may run
// instead, per direction: psgd's direct kernel (forward and data gradient, where it serves the
// shape) and, for bf16 activations, cuDNN's float32 kernels on widened copies (all three). Each
// candidate is timed as a training step runs it, on the search's buffers, and the fastest runs.
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

// One way to run a direction, and what choosing it sets in the plan.
struct Candidate {
  std::function<void()> run;
  std::function<void(ConvPlan&)> choose;
};

void keep_fastest(const Context& ctx, ConvPlan& p, const std::vector<Candidate>& candidates) {
  double fastest = std::numeric_limits<double>::infinity();
  const Candidate* chosen = nullptr;
  for (const Candidate& c : candidates) {
    const double us = microseconds_per_call(ctx, c.run);
    if (us < fastest) {
      fastest = us;
      chosen = &c;
    }
  }
  if (chosen) chosen->choose(p);
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
  const bool direct = conv2d_direct_supported(w_shape, {k.stride, k.pad});
  const bool bf16 = k.activations == DType::BF16;
  const bool cudnn_data = p.missing_backward_data.empty();
  switch (k.conv) {
    case Conv::Cudnn:
      return;
    case Conv::Direct:
      p.forward_direct = p.data_direct = direct;
      return;
    case Conv::Widened:
      if (!bf16) return;
      p.widened = widened_plan(ctx, k, x_shape, w_shape, y_shape);
      p.forward_widened = p.filter_widened = true;
      p.data_widened = p.widened->missing_backward_data.empty();
      p.data_direct = !p.data_widened && direct;
      return;
    case Conv::Auto:
      break;
  }
  // The data gradient falls back to the direct kernel where cuDNN has none; deterministic runs
  // (no timing) keep the rest of cuDNN's choice.
  p.data_direct = !cudnn_data && direct;
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
  const auto nothing = [](ConvPlan&) {};

  std::vector<Candidate> forward{
      {[&] { cudnn_forward(ctx, p, x.data, filter.data, workspace, y.data); }, nothing}};
  if (direct)
    forward.push_back({[&] { conv2d_direct_forward(x, filter.data, w_shape, y); },
                       [](ConvPlan& q) { q.forward_direct = true; }});
  if (bf16)
    forward.push_back({[&] { widened_forward(ctx, *p.widened, x, filter, scratch->buffers, y); },
                       [](ConvPlan& q) { q.forward_widened = true; }});
  keep_fastest(ctx, p, forward);

  // The bf16 kernels' dw comes out in bf16 and is widened into the float32 dw.
  std::vector<Candidate> filter_gradient{{[&] {
                                            cudnn_backward_filter(ctx, p, x.data, y.data, workspace,
                                                                  dw.data);
                                            if (bf16) cast(dw, dw32);
                                          },
                                          nothing}};
  if (bf16)
    filter_gradient.push_back(
        {[&] { widened_backward_filter(ctx, *p.widened, x, y, scratch->buffers, dw, dw32); },
         [](ConvPlan& q) { q.filter_widened = true; }});
  keep_fastest(ctx, p, filter_gradient);

  std::vector<Candidate> data_gradient;
  if (cudnn_data)
    data_gradient.push_back(
        {[&] { cudnn_backward_data(ctx, p, filter.data, y.data, workspace, 0.0f, dx.data); },
         [](ConvPlan& q) { q.data_direct = false; }});
  if (direct)
    data_gradient.push_back(
        {[&] { conv2d_direct_backward_data(y, filter.data, w_shape, GradMode::Overwrite, dx); },
         [](ConvPlan& q) { q.data_direct = true; }});
  if (widened_data)
    data_gradient.push_back({[&] {
                               widened_backward_data(ctx, *p.widened, filter, y, false,
                                                     scratch->buffers, GradMode::Overwrite, dx);
                             },
                             [](ConvPlan& q) {
                               q.data_direct = false;
                               q.data_widened = true;
                             }});
  keep_fastest(ctx, p, data_gradient);
  if (!p.any_widened()) p.widened.reset();
}

}  // namespace psgd::cuda
