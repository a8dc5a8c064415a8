// Convolution on CUDA through cuDNN (NCHW, float32). For each shape and math mode the fastest
// algorithm of each direction is found once, by timing (cudnnFind*AlgorithmEx on scratch
// buffers, at planning time), and cached with its descriptors; a step only looks it up.
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "engine/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace psgd::cuda {
namespace {

// The most scratch memory an algorithm may ask for: more rarely buys speed at these sizes.
constexpr size_t kMaxWorkspaceBytes = size_t{256} << 20;

struct ConvKey {
  int device;
  int64_t x[4], w[4];
  int stride, pad;
  bool tf32, deterministic;
  auto operator<=>(const ConvKey&) const = default;
};

class ConvPlan {
 public:
  ConvPlan(const ConvKey& k, const Shape& y_shape) {
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    const auto i = [](int64_t v) { return static_cast<int>(v); };
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, i(k.x[0]),
                                           i(k.x[1]), i(k.x[2]), i(k.x[3])));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, i(y_shape[0]),
                                           i(y_shape[1]), i(y_shape[2]), i(y_shape[3])));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, i(k.w[0]),
                                           i(k.w[1]), i(k.w[2]), i(k.w[3])));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, k.pad, k.pad, k.stride, k.stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  }
  ~ConvPlan() {
    cudnnDestroyConvolutionDescriptor(conv);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(x);
  }
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;

  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t forward{};
  cudnnConvolutionBwdDataAlgo_t backward_data{};
  cudnnConvolutionBwdFilterAlgo_t backward_filter{};
  cudnnMathType_t forward_math{}, data_math{}, filter_math{};
  size_t workspace_bytes = 0;
};

// Scratch device memory for the timing runs, freed when the search ends.
struct Scratch {
  explicit Scratch(size_t bytes) {
    CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(bytes, 4)));
    CUDA_CHECK(cudaMemset(ptr, 0, std::max<size_t>(bytes, 4)));
  }
  ~Scratch() { cudaFree(ptr); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* ptr = nullptr;
};

// The fastest result that succeeded and respects the math mode; results come sorted by time. In
// strict float32 the algorithm runs with CUDNN_FMA_MATH whatever its result says:
// CUDNN_DEFAULT_MATH still permits TF32 on Ampere and later.
template <class Perf>
Perf choose(const std::vector<Perf>& results, int count, const ConvKey& k, const char* direction) {
  for (int i = 0; i < count; ++i) {
    Perf p = results[i];
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    if (k.deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
    if (p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;  // would round to fp16
    if (!k.tf32) {
      if (p.mathType == CUDNN_TENSOR_OP_MATH) continue;
      p.mathType = CUDNN_FMA_MATH;
    }
    return p;
  }
  PSGD_FAIL("cuDNN has no ", k.deterministic ? "deterministic " : "", direction,
            " convolution algorithm for input (", k.x[0], ", ", k.x[1], ", ", k.x[2], ", ", k.x[3],
            ") and weight (", k.w[0], ", ", k.w[1], ", ", k.w[2], ", ", k.w[3], ")");
}

// Times every algorithm of one direction (find(capacity, &count, results) runs cuDNN's Find,
// which returns as many results as max_count says: an algorithm can appear once per math type)
// and chooses.
template <class Perf, class MaxCount, class Find>
Perf timed_best(cudnnHandle_t handle, const ConvKey& k, const char* direction, MaxCount max_count,
                Find find) {
  int capacity = 0, count = 0;
  CUDNN_CHECK(max_count(handle, &capacity));
  std::vector<Perf> results(static_cast<size_t>(capacity));
  find(capacity, &count, results.data());
  return choose(results, count, k, direction);
}

std::unique_ptr<ConvPlan> find_algorithms(cudnnHandle_t handle, const ConvKey& k,
                                          const Shape& x_shape, const Shape& w_shape,
                                          const Shape& y_shape) {
  auto plan = std::make_unique<ConvPlan>(k, y_shape);
  // Strict float32 asks cuDNN for FMA kernels only; `choose` also drops any TF32 result.
  CUDNN_CHECK(
      cudnnSetConvolutionMathType(plan->conv, k.tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  size_t free = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const size_t limit = std::min(kMaxWorkspaceBytes, free / 4);
  const size_t f = sizeof(float);
  Scratch x(x_shape.numel() * f), w(w_shape.numel() * f), y(y_shape.numel() * f);
  Scratch dx(x_shape.numel() * f), dw(w_shape.numel() * f), workspace(limit);
  const auto f_best = timed_best<cudnnConvolutionFwdAlgoPerf_t>(
      handle, k, "forward", cudnnGetConvolutionForwardAlgorithmMaxCount,
      [&](int capacity, int* count, cudnnConvolutionFwdAlgoPerf_t* results) {
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(handle, plan->x, x.ptr, plan->w, w.ptr,
                                                           plan->conv, plan->y, y.ptr, capacity,
                                                           count, results, workspace.ptr, limit));
      });
  const auto d_best = timed_best<cudnnConvolutionBwdDataAlgoPerf_t>(
      handle, k, "backward-data", cudnnGetConvolutionBackwardDataAlgorithmMaxCount,
      [&](int capacity, int* count, cudnnConvolutionBwdDataAlgoPerf_t* results) {
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
            handle, plan->w, w.ptr, plan->y, y.ptr, plan->conv, plan->x, dx.ptr, capacity, count,
            results, workspace.ptr, limit));
      });
  const auto w_best = timed_best<cudnnConvolutionBwdFilterAlgoPerf_t>(
      handle, k, "backward-filter", cudnnGetConvolutionBackwardFilterAlgorithmMaxCount,
      [&](int capacity, int* count, cudnnConvolutionBwdFilterAlgoPerf_t* results) {
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
            handle, plan->x, x.ptr, plan->y, y.ptr, plan->conv, plan->w, dw.ptr, capacity, count,
            results, workspace.ptr, limit));
      });
  plan->forward = f_best.algo;
  plan->forward_math = f_best.mathType;
  plan->backward_data = d_best.algo;
  plan->data_math = d_best.mathType;
  plan->backward_filter = w_best.algo;
  plan->filter_math = w_best.mathType;
  plan->workspace_bytes = std::max({f_best.memory, d_best.memory, w_best.memory});
  return plan;
}

ConvKey key_of(const Context& ctx, const Shape& x, const Shape& w, ops::Conv2dGeometry g) {
  ConvKey k{};
  CUDA_CHECK(cudaGetDevice(&k.device));
  for (int i = 0; i < 4; ++i) {
    k.x[i] = x[i];
    k.w[i] = w[i];
  }
  k.stride = g.stride;
  k.pad = g.pad;
  k.tf32 = ctx.math().tf32;
  k.deterministic = ctx.math().deterministic;
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
  if (!plan) plan = find_algorithms(ctx.cudnn(), k, x, w, ops::conv2d_output_shape(x, w, g));
  return *plan;
}

int64_t workspace_floats_of(const ConvPlan& plan) {
  return static_cast<int64_t>((plan.workspace_bytes + sizeof(float) - 1) / sizeof(float));
}

}  // namespace

int64_t conv2d_workspace_floats(const Context& ctx, const Shape& x, const Shape& w,
                                ops::Conv2dGeometry g) {
  return workspace_floats_of(plan_for(ctx, x, w, g));
}

void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, ops::Conv2dGeometry g,
                    const Tensor& y) {
  const ConvPlan& p = plan_for(ctx, x.shape, w.shape, g);
  const Tensor ws = ctx.workspace(workspace_floats_of(p));
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.forward_math));
  CUDNN_CHECK(cudnnConvolutionForward(ctx.cudnn(), &one, p.x, x.data, p.w, w.data, p.conv,
                                      p.forward, ws.data, p.workspace_bytes, &zero, p.y, y.data));
}

void conv2d_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     ops::Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw) {
  const ConvPlan& p = plan_for(ctx, x.shape, w.shape, g);
  const Tensor ws = ctx.workspace(workspace_floats_of(p));
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.filter_math));
  CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.cudnn(), &one, p.x, x.data, p.y, dy.data, p.conv,
                                             p.backward_filter, ws.data, p.workspace_bytes, &zero,
                                             p.w, dw.data));
  if (!dx.defined()) return;
  const float beta = dx_mode == GradMode::Accumulate ? 1.0f : 0.0f;
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.data_math));
  CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.cudnn(), &one, p.w, w.data, p.y, dy.data, p.conv,
                                           p.backward_data, ws.data, p.workspace_bytes, &beta, p.x,
                                           dx.data));
}

}  // namespace psgd::cuda
