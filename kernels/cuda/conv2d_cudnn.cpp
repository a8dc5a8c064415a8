// Convolution on CUDA through cuDNN (NCHW, float32 or bf16 activations). For each shape, element
// type and math mode an algorithm of each direction is chosen once, at planning time, and cached
// with its descriptors in a plan (conv2d_plan.h); a step only looks it up. It is the fastest by
// timing (cudnnFind*AlgorithmEx on scratch buffers), or under --deterministic the first
// deterministic one in cuDNN's heuristic order, so that every run chooses the same. A race then
// sets which directions run an alternative instead (conv2d_race.cpp): psgd's direct or tensor-core
// kernels (conv2d_direct.cu, conv2d_tensor_core.cu), or for bf16 activations cuDNN's float32
// kernels (conv2d_widened.cpp).
//
// bf16 activations use cuDNN's PSEUDO_BFLOAT16 configuration: x, w and y all bf16, computing in
// float32 (cards from Ampere on). The float32 master weight is rounded into a bf16 copy in the
// workspace, and dw comes out in bf16 there before it is widened into the float32 dw.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cuda_check.h"
#include "kernels/cuda/conv2d_plan.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/workspace.h"

namespace psgd::cuda {
namespace {

constexpr size_t kMinWorkspaceLimit = size_t{64} << 20;  // see workspace_limit

// The most scratch memory an algorithm may ask for: as much as the layer's input and output
// take, and at least 64 MiB, so that the workspace never dominates peak memory while the fastest
// algorithms of large layers, whose scratch grows with the batch, stay within reach. (Under a
// fixed 64 MiB, VGG16-bn ran slower per image at batch 512 than at 128 on an H100; that this
// limit was the cause is still to be measured: BENCHMARKS.md.)
size_t workspace_limit(const ConvKey& k, const Shape& x_shape, const Shape& y_shape) {
  const size_t activations =
      static_cast<size_t>(x_shape.numel() + y_shape.numel()) * dtype_size(k.activations);
  return std::max(kMinWorkspaceLimit, activations);
}

}  // namespace

ConvPlan::ConvPlan(const ConvKey& k, const Shape& y_shape)
    : activations(k.activations), stride(k.stride) {
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
  CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
  CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  // x, w and y share one type; the convolution computes in float32 either way.
  const cudnnDataType_t type =
      k.activations == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, type, i(k.x[0]), i(k.x[1]),
                                         i(k.x[2]), i(k.x[3])));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, type, i(y_shape[0]), i(y_shape[1]),
                                         i(y_shape[2]), i(y_shape[3])));
  CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, type, CUDNN_TENSOR_NCHW, i(k.w[0]), i(k.w[1]),
                                         i(k.w[2]), i(k.w[3])));
  CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, k.pad, k.pad, k.stride, k.stride, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
}

ConvPlan::~ConvPlan() {
  cudnnDestroyConvolutionDescriptor(conv);
  cudnnDestroyFilterDescriptor(w);
  cudnnDestroyTensorDescriptor(y);
  cudnnDestroyTensorDescriptor(x);
}

namespace {

const char* route_name(ConvRoute r) {
  switch (r) {
    case ConvRoute::Direct:
      return "direct";
    case ConvRoute::TensorCore:
      return "tensor-core";
    case ConvRoute::Widened:
      return "widened";
    case ConvRoute::Cudnn:
      break;
  }
  return "cudnn";
}

}  // namespace

std::string ConvPlan::routes() const {
  return std::string("forward ") + route_name(forward_route) + ", backward-data " +
         route_name(data_route) + ", backward-filter " + route_name(filter_route);
}

Scratch::Scratch(size_t bytes) {
  CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(bytes, 4)));
  CUDA_CHECK(cudaMemset(ptr, 0, std::max<size_t>(bytes, 4)));
}

Scratch::~Scratch() {
  cudaFree(ptr);
}

TimingBuffers::TimingBuffers(const ConvKey& k, const Shape& x_shape, const Shape& w_shape,
                             const Shape& y_shape, size_t limit)
    : x(x_shape.numel() * dtype_size(k.activations)),
      w(w_shape.numel() * dtype_size(k.activations)),
      y(y_shape.numel() * dtype_size(k.activations)),
      dx(x_shape.numel() * dtype_size(k.activations)),
      dw(w_shape.numel() * dtype_size(k.activations)),
      workspace(limit),
      workspace_bytes(limit) {}

namespace {

// Among the results that succeeded, respect the math mode and fit the workspace limit, sorted
// by time: the one needing the least workspace within kTimeSlack of the fastest, since the
// workspace is held for the whole run and counts in peak memory, and a few percent of one
// convolution are not worth tens of megabytes. Deterministic runs take the first of cuDNN's
// heuristic order instead: which algorithm wins a timing race can change from run to run, and
// two deterministic algorithms give different bits. Where tensor cores are ruled out the
// algorithm runs with CUDNN_FMA_MATH whatever its result says: CUDNN_DEFAULT_MATH still permits
// TF32 on Ampere and later.
constexpr float kTimeSlack = 1.05f;

// The algorithms that transform the operands before multiplying them (FFT, Winograd).
bool transforms_operands(cudnnConvolutionFwdAlgo_t a) {
  return a == CUDNN_CONVOLUTION_FWD_ALGO_FFT || a == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
}
bool transforms_operands(cudnnConvolutionBwdDataAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT ||
         a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
         a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD ||
         a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
}
bool transforms_operands(cudnnConvolutionBwdFilterAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
}

template <class Perf>
std::optional<Perf> choose(const std::vector<Perf>& results, int count, const ConvKey& k,
                           size_t limit) {
  std::optional<Perf> chosen;
  float fastest = 0.0f;
  for (int i = 0; i < count; ++i) {
    Perf p = results[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > limit) continue;
    if (k.deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
    if (p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;  // would round to fp16
    if (k.untransformed && transforms_operands(p.algo)) continue;
    if (!tensor_cores_allowed(k)) {
      if (p.mathType == CUDNN_TENSOR_OP_MATH) continue;
      p.mathType = CUDNN_FMA_MATH;
    }
    if (!chosen) {
      chosen = p;
      fastest = p.time;
      if (k.deterministic) break;
    } else if (p.time <= kTimeSlack * fastest && p.memory < chosen->memory) {
      chosen = p;
    }
  }
  return chosen;
}

std::string no_algorithm(const ConvKey& k, const char* direction) {
  std::ostringstream s;
  s << "cuDNN has no " << (k.deterministic ? "deterministic " : "") << direction
    << " convolution algorithm for input (" << k.x[0] << ", " << k.x[1] << ", " << k.x[2] << ", "
    << k.x[3] << ") and weight (" << k.w[0] << ", " << k.w[1] << ", " << k.w[2] << ", " << k.w[3]
    << ") in " << dtype_name(k.activations);
  return s.str();
}

// The candidates of one direction (search(capacity, &count, results) runs cuDNN's Find, which
// times every algorithm, or its heuristics; either returns as many results as max_count says:
// an algorithm can appear once per math type), then the choice, if any qualifies.
template <class Perf, class MaxCount, class Search>
std::optional<Perf> best(cudnnHandle_t handle, const ConvKey& k, size_t limit, MaxCount max_count,
                         Search search) {
  int capacity = 0, count = 0;
  CUDNN_CHECK(max_count(handle, &capacity));
  std::vector<Perf> results(static_cast<size_t>(capacity));
  search(capacity, &count, results.data());
  return choose(results, count, k, limit);
}

// With PSGD_CUDNN_LOG set, one line per shape on stderr: which algorithms and math types the
// search chose, so that a numerical failure on a GPU can be traced to them.
void log_choice(const ConvKey& k, const ConvPlan& p) {
  if (!std::getenv("PSGD_CUDNN_LOG")) return;
  std::fprintf(stderr,
               "cudnn: x (%ld, %ld, %ld, %ld) w (%ld, %ld, %ld, %ld) stride %d pad %d %s%s%s: "
               "forward algo %d math %d, backward-data algo %d math %d, backward-filter algo %d "
               "math %d, workspace %zu bytes; %s\n",
               long(k.x[0]), long(k.x[1]), long(k.x[2]), long(k.x[3]), long(k.w[0]), long(k.w[1]),
               long(k.w[2]), long(k.w[3]), k.stride, k.pad, dtype_name(k.activations),
               k.tf32 ? ", tf32" : "", k.deterministic ? ", deterministic" : "", int(p.forward),
               int(p.forward_math), int(p.backward_data), int(p.data_math), int(p.backward_filter),
               int(p.filter_math), p.workspace_bytes, p.routes().c_str());
}

// The workspace the chosen algorithms need: the most of what the search reported and what cuDNN
// says for each algorithm with the math type it will run with (they can differ).
size_t required_workspace(cudnnHandle_t handle, const ConvPlan& p,
                          std::initializer_list<size_t> reported) {
  size_t need = std::max(reported), bytes = 0;
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.forward_math));
  CUDNN_CHECK(
      cudnnGetConvolutionForwardWorkspaceSize(handle, p.x, p.w, p.conv, p.y, p.forward, &bytes));
  need = std::max(need, bytes);
  if (p.missing_backward_data.empty()) {
    CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.data_math));
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(handle, p.w, p.y, p.conv, p.x,
                                                             p.backward_data, &bytes));
    need = std::max(need, bytes);
  }
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.filter_math));
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, p.x, p.y, p.conv, p.w,
                                                             p.backward_filter, &bytes));
  return std::max(need, bytes);
}

}  // namespace

std::unique_ptr<ConvPlan> find_algorithms(const Context& ctx, const ConvKey& k,
                                          const Shape& x_shape, const Shape& w_shape,
                                          const Shape& y_shape) {
  cudnnHandle_t handle = ctx.cudnn();
  auto plan = std::make_unique<ConvPlan>(k, y_shape);
  // Strict float32 asks cuDNN for FMA kernels only; `choose` also drops any TF32 result.
  CUDNN_CHECK(cudnnSetConvolutionMathType(
      plan->conv, tensor_cores_allowed(k) ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  // Timing allocates the workspace offered, so it takes at most a quarter of what is free; a
  // deterministic choice depends on the shape alone, so that every run makes the same.
  size_t free = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const size_t limit = k.deterministic ? workspace_limit(k, x_shape, y_shape)
                                       : std::min(workspace_limit(k, x_shape, y_shape), free / 4);
  const auto timing = k.deterministic
                          ? nullptr
                          : std::make_unique<TimingBuffers>(k, x_shape, w_shape, y_shape, limit);
  const ConvPlan& p = *plan;
  const auto f_best = best<cudnnConvolutionFwdAlgoPerf_t>(
      handle, k, limit, cudnnGetConvolutionForwardAlgorithmMaxCount,
      [&](int capacity, int* count, cudnnConvolutionFwdAlgoPerf_t* results) {
        if (!timing)
          CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle, p.x, p.w, p.conv, p.y,
                                                             capacity, count, results));
        else
          CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
              handle, p.x, timing->x.ptr, p.w, timing->w.ptr, p.conv, p.y, timing->y.ptr, capacity,
              count, results, timing->workspace.ptr, limit));
      });
  const auto d_best = best<cudnnConvolutionBwdDataAlgoPerf_t>(
      handle, k, limit, cudnnGetConvolutionBackwardDataAlgorithmMaxCount,
      [&](int capacity, int* count, cudnnConvolutionBwdDataAlgoPerf_t* results) {
        if (!timing)
          CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, p.w, p.y, p.conv, p.x,
                                                                  capacity, count, results));
        else
          CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
              handle, p.w, timing->w.ptr, p.y, timing->y.ptr, p.conv, p.x, timing->dx.ptr, capacity,
              count, results, timing->workspace.ptr, limit));
      });
  const auto w_best = best<cudnnConvolutionBwdFilterAlgoPerf_t>(
      handle, k, limit, cudnnGetConvolutionBackwardFilterAlgorithmMaxCount,
      [&](int capacity, int* count, cudnnConvolutionBwdFilterAlgoPerf_t* results) {
        if (!timing)
          CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, p.x, p.y, p.conv, p.w,
                                                                    capacity, count, results));
        else
          CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
              handle, p.x, timing->x.ptr, p.y, timing->y.ptr, p.conv, p.w, timing->dw.ptr, capacity,
              count, results, timing->workspace.ptr, limit));
      });
  // The data gradient is asked for only where the input has one (not of the images): a shape
  // without an algorithm for it fails only if it is.
  PSGD_CHECK(f_best, no_algorithm(k, "forward"));
  PSGD_CHECK(w_best, no_algorithm(k, "backward-filter"));
  if (!d_best) plan->missing_backward_data = no_algorithm(k, "backward-data");
  plan->forward = f_best->algo;
  plan->forward_math = f_best->mathType;
  plan->backward_data = d_best ? d_best->algo : cudnnConvolutionBwdDataAlgo_t{};
  plan->data_math = d_best ? d_best->mathType : CUDNN_DEFAULT_MATH;
  plan->backward_filter = w_best->algo;
  plan->filter_math = w_best->mathType;
  plan->workspace_bytes = required_workspace(
      handle, *plan, {f_best->memory, d_best ? d_best->memory : 0, w_best->memory});
  race_alternatives(ctx, k, *plan, x_shape, w_shape, y_shape, timing.get());
  log_choice(k, *plan);
  return plan;
}

namespace {

ConvKey key_of(const Context& ctx, const Shape& x, const Shape& w, ops::Conv2dGeometry g) {
  ConvKey k{};
  CUDA_CHECK(cudaGetDevice(&k.device));
  for (int i = 0; i < 4; ++i) {
    k.x[i] = x[i];
    k.w[i] = w[i];
  }
  k.stride = g.stride;
  k.pad = g.pad;
  k.activations = ctx.activation_dtype();
  k.tf32 = ctx.math().tf32;
  k.deterministic = ctx.math().deterministic;
  k.conv = ctx.math().conv;
  return k;
}

// The plan for a shape, searched for on first use (normally at planning time).
const ConvPlan& plan_for(const Context& ctx, const Shape& x, const Shape& w,
                         ops::Conv2dGeometry g) {
  static std::mutex mutex;
  static std::map<ConvKey, std::unique_ptr<ConvPlan>> plans;
  const ConvKey k = key_of(ctx, x, w, g);
  std::lock_guard lock(mutex);
  auto& plan = plans[k];
  if (plan) return *plan;
  // The search allocates and waits: inside a captured step it would break the capture.
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(ctx.stream(), &capturing));
  PSGD_CHECK(capturing == cudaStreamCaptureStatusNone, "conv2d: input ", x.str(), ", weight ",
             w.str(), " was not planned before a captured step (Net::plan)");
  plan = find_algorithms(ctx, k, x, w, ops::conv2d_output_shape(x, w, g));
  return *plan;
}

// Where a plan's scratch lies in the workspace: cuDNN's own first (for the bf16 or the float32
// plan's algorithms, whichever needs more), then for bf16 activations the bf16 filter, which
// holds in turn w rounded for forward and backward-data, and dw from backward-filter until it is
// widened; then where a direction is widened, the float32 copies.
struct ScratchLayout {
  size_t filter = 0;                 // byte offset of the bf16 filter
  size_t w32 = 0, x32 = 0, y32 = 0;  // of the float32 copies
  size_t partials = 0;               // of the tensor-core filter gradient's partial sums
  Shape partials_shape;              // their count (where the filter gradient runs on tensor cores)
  int64_t floats = 0;
};

ScratchLayout scratch_layout(const ConvPlan& p, const Shape& x, const Shape& w, const Shape& y) {
  WorkspaceLayout layout;
  layout.add(std::max(p.workspace_bytes, p.any_widened() ? p.widened->workspace_bytes : 0));
  ScratchLayout s;
  if (p.activations == DType::BF16) s.filter = layout.add(w, DType::BF16);
  if (p.filter_route == ConvRoute::TensorCore) {
    s.partials_shape = Shape{conv2d_tensor_core_filter_workspace_floats(x, w, p.stride)};
    s.partials = layout.add(s.partials_shape, DType::F32);
  }
  if (p.any_widened()) {
    s.w32 = layout.add(w, DType::F32);
    s.x32 = layout.add(x, DType::F32);
    s.y32 = layout.add(y, DType::F32);
  }
  s.floats = layout.floats();
  return s;
}

struct ConvScratch {
  void* cudnn;             // cuDNN's workspace
  Tensor filter;           // (K, C, R, S) bf16; undefined for float32 activations
  Tensor partials;         // where the filter gradient runs on tensor cores
  WidenedBuffers widened;  // where a direction is widened
};

ConvScratch scratch_for(const Context& ctx, const ConvPlan& p, const Shape& x, const Shape& w,
                        const Shape& y) {
  const ScratchLayout s = scratch_layout(p, x, w, y);
  const Tensor ws = ctx.workspace(s.floats);
  ConvScratch scratch{ws.data, {}, {}, {}};
  if (p.activations == DType::BF16) scratch.filter = workspace_region(ws, s.filter, w, DType::BF16);
  if (p.filter_route == ConvRoute::TensorCore)
    scratch.partials = workspace_region(ws, s.partials, s.partials_shape, DType::F32);
  if (p.any_widened())
    scratch.widened = {workspace_region(ws, s.w32, w, DType::F32),
                       workspace_region(ws, s.x32, x, DType::F32),
                       workspace_region(ws, s.y32, y, DType::F32), ws.data};
  return scratch;
}

// w as cuDNN reads it: itself, or rounded into the bf16 filter (a kernel on the stream).
const void* stage_filter(const ConvScratch& s, const Tensor& w) {
  if (!s.filter.defined()) return w.data;
  cast(w, s.filter);
  return s.filter.data;
}

}  // namespace

void cudnn_forward(const Context& ctx, const ConvPlan& p, const void* x, const void* filter,
                   void* workspace, void* y) {
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.forward_math));
  CUDNN_CHECK(cudnnConvolutionForward(ctx.cudnn(), &one, p.x, x, p.w, filter, p.conv, p.forward,
                                      workspace, p.workspace_bytes, &zero, p.y, y));
}

void cudnn_backward_filter(const Context& ctx, const ConvPlan& p, const void* x, const void* dy,
                           void* workspace, void* dw) {
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.filter_math));
  CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.cudnn(), &one, p.x, x, p.y, dy, p.conv,
                                             p.backward_filter, workspace, p.workspace_bytes, &zero,
                                             p.w, dw));
}

void cudnn_backward_data(const Context& ctx, const ConvPlan& p, const void* filter, const void* dy,
                         void* workspace, float beta, void* dx) {
  PSGD_CHECK(p.missing_backward_data.empty(), p.missing_backward_data);
  const float one = 1.0f;
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.data_math));
  CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.cudnn(), &one, p.w, filter, p.y, dy, p.conv,
                                           p.backward_data, workspace, p.workspace_bytes, &beta,
                                           p.x, dx));
}

std::string conv2d_routes(const Context& ctx, const Shape& x, const Shape& w,
                          ops::Conv2dGeometry g) {
  return plan_for(ctx, x, w, g).routes();
}

int64_t conv2d_workspace_floats(const Context& ctx, const Shape& x, const Shape& w,
                                ops::Conv2dGeometry g) {
  return scratch_layout(plan_for(ctx, x, w, g), x, w, ops::conv2d_output_shape(x, w, g)).floats;
}

void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, ops::Conv2dGeometry g,
                    const Tensor& y) {
  const ConvPlan& p = plan_for(ctx, x.shape, w.shape, g);
  const ConvScratch s = scratch_for(ctx, p, x.shape, w.shape, y.shape);
  const void* filter = stage_filter(s, w);
  switch (p.forward_route) {
    case ConvRoute::Direct:
      return conv2d_direct_forward(x, filter, w.shape, y);
    case ConvRoute::TensorCore:
      return conv2d_tensor_core_forward(x, filter, w.shape, g.stride, y);
    case ConvRoute::Widened:
      return widened_forward(ctx, *p.widened, x, s.filter, s.widened, y);
    case ConvRoute::Cudnn:
      return cudnn_forward(ctx, p, x.data, filter, s.cudnn, y.data);
  }
}

void conv2d_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     ops::Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw) {
  const ConvPlan& p = plan_for(ctx, x.shape, w.shape, g);
  const ConvScratch s = scratch_for(ctx, p, x.shape, w.shape, dy.shape);
  if (p.filter_route == ConvRoute::Widened) {
    widened_backward_filter(ctx, *p.widened, x, dy, s.widened, s.filter, dw);
  } else if (p.filter_route == ConvRoute::TensorCore) {
    conv2d_tensor_core_backward_filter(x, dy, w.shape, g.stride, s.partials, dw);
  } else {
    cudnn_backward_filter(ctx, p, x.data, dy.data, s.cudnn,
                          s.filter.defined() ? s.filter.data : dw.data);
    if (s.filter.defined()) cast(s.filter, dw);
  }
  if (!dx.defined()) return;
  const void* filter = stage_filter(s, w);  // after dw has left the bf16 filter
  switch (p.data_route) {
    case ConvRoute::Direct:
      return conv2d_direct_backward_data(dy, filter, w.shape, dx_mode, dx);
    case ConvRoute::TensorCore:
      return conv2d_tensor_core_backward_data(dy, filter, w.shape, g.stride, dx_mode, dx);
    case ConvRoute::Widened:
      return widened_backward_data(ctx, *p.widened, s.filter, dy,
                                   p.filter_route == ConvRoute::Widened, s.widened, dx_mode, dx);
    case ConvRoute::Cudnn:
      return cudnn_backward_data(ctx, p, filter, dy.data, s.cudnn,
                                 dx_mode == GradMode::Accumulate ? 1.0f : 0.0f, dx.data);
  }
}

}  // namespace psgd::cuda
