// The plan of one convolution shape on CUDA: the cuDNN descriptors and algorithms chosen for it
// at planning time (conv2d_cudnn.cpp), and where a race at that time found them faster, the
// alternatives that run instead (conv2d_race.cpp): psgd's direct or tensor-core kernels, or for
// bf16 activations cuDNN's float32 kernels on widened copies (conv2d_widened.cpp).
#pragma once

#include <cudnn.h>

#include <compare>
#include <memory>
#include <string>

#include "engine/context.h"
#include "kernels/ops.h"

namespace psgd::cuda {

struct ConvKey {
  int device;
  int64_t x[4], w[4];
  int stride, pad;
  DType activations;
  bool tf32, deterministic;
  Numerics::Conv conv;
  // Only algorithms that multiply the operands as they are (no FFT or Winograd transforms): the
  // widened plan of a bf16 shape, whose products must be the bf16 kernels'.
  bool untransformed = false;
  auto operator<=>(const ConvKey&) const = default;
};

// What runs one direction of a convolution: cuDNN's algorithm, psgd's direct kernel
// (conv2d_direct.cu), psgd's tensor-core kernel (conv2d_tensor_core.cu), or for bf16 activations
// cuDNN's float32 kernels on widened copies.
enum class ConvRoute { Cudnn, Direct, TensorCore, Widened };

// Tensor cores round float32 inputs to TF32, which strict float32 rules out; bf16 inputs they
// multiply exactly, accumulating in float32.
inline bool tensor_cores_allowed(const ConvKey& k) {
  return k.tf32 || k.activations == DType::BF16;
}

class ConvPlan {
 public:
  ConvPlan(const ConvKey& k, const Shape& y_shape);
  ~ConvPlan();
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;

  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t forward{};
  cudnnConvolutionBwdDataAlgo_t backward_data{};
  cudnnConvolutionBwdFilterAlgo_t backward_filter{};
  cudnnMathType_t forward_math{}, data_math{}, filter_math{};
  size_t workspace_bytes = 0;         // cuDNN's own, the most any of the three algorithms needs
  std::string missing_backward_data;  // why there is no backward-data algorithm; empty: there is
  DType activations;
  int stride;

  // How each direction runs (the filter gradient: cuDNN or widened). Widened directions run on
  // float32 copies through `widened`, the float32 plan of the same shape (conv2d_widened.cpp).
  ConvRoute forward_route = ConvRoute::Cudnn, data_route = ConvRoute::Cudnn,
            filter_route = ConvRoute::Cudnn;
  std::unique_ptr<ConvPlan> widened;
  // "forward <route>, backward-data <route>, backward-filter <route>", for logs and tests.
  std::string routes() const;
  bool any_widened() const {
    return forward_route == ConvRoute::Widened || data_route == ConvRoute::Widened ||
           filter_route == ConvRoute::Widened;
  }
};

// Each direction through cuDNN with the plan's algorithm and math type, on device pointers;
// `workspace` holds the plan's workspace_bytes. The data gradient is beta dx + the gradient.
void cudnn_forward(const Context& ctx, const ConvPlan& p, const void* x, const void* filter,
                   void* workspace, void* y);
void cudnn_backward_filter(const Context& ctx, const ConvPlan& p, const void* x, const void* dy,
                           void* workspace, void* dw);
void cudnn_backward_data(const Context& ctx, const ConvPlan& p, const void* filter, const void* dy,
                         void* workspace, float beta, void* dx);

// Searches cuDNN's algorithms for a shape (timing them, or under --deterministic by its
// heuristics), then races the alternatives.
std::unique_ptr<ConvPlan> find_algorithms(const Context& ctx, const ConvKey& k,
                                          const Shape& x_shape, const Shape& w_shape,
                                          const Shape& y_shape);

// Device memory of the planning-time searches and races, freed when they end.
struct Scratch {
  explicit Scratch(size_t bytes);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* ptr = nullptr;
};

// The buffers cuDNN's Find times the algorithms on (in the activations' element type; dw too),
// on which the race then times the alternatives.
struct TimingBuffers {
  TimingBuffers(const ConvKey& k, const Shape& x_shape, const Shape& w_shape, const Shape& y_shape,
                size_t limit);
  Scratch x, w, y, dx, dw, workspace;
  size_t workspace_bytes;
};

// Sets which alternatives of plan `p` (already holding cuDNN's choices) run instead of cuDNN, as
// Numerics::conv says: under Auto, each direction's fastest by timing on `timing`'s buffers (null
// under --deterministic: no race, the same choice in every run).
void race_alternatives(const Context& ctx, const ConvKey& k, ConvPlan& p, const Shape& x_shape,
                       const Shape& w_shape, const Shape& y_shape, const TimingBuffers* timing);

// The float32 copies a widened bf16 convolution works on, and cuDNN's workspace for the float32
// plan's algorithms.
struct WidenedBuffers {
  Tensor w, x, y;  // the filter's, x's and y's shapes, float32
  void* workspace = nullptr;
};

// Each runs one direction of bf16 tensors through the float32 plan `f`: the bf16 values, and the
// weights' bf16 rounding `filter` (K, C, R, S), are TF32 numbers, which tensor cores multiply
// exactly, accumulating in float32; each result is rounded once, as by cuDNN's bf16 kernels.
// dw (float32) keeps bf16 precision as theirs does, rounded through `filter_scratch` (bf16).
void widened_forward(const Context& ctx, const ConvPlan& f, const Tensor& x, const Tensor& filter,
                     const WidenedBuffers& b, const Tensor& y);
void widened_backward_filter(const Context& ctx, const ConvPlan& f, const Tensor& x,
                             const Tensor& dy, const WidenedBuffers& b,
                             const Tensor& filter_scratch, const Tensor& dw);
// `dy_widened`: b.y holds dy already (left by widened_backward_filter).
void widened_backward_data(const Context& ctx, const ConvPlan& f, const Tensor& filter,
                           const Tensor& dy, bool dy_widened, const WidenedBuffers& b,
                           ops::GradMode dx_mode, const Tensor& dx);

// A device view of `shape` elements of `dtype` at `data`.
inline Tensor device_view(void* data, const Shape& shape, DType dtype) {
  Tensor t;
  t.data = data;
  t.shape = shape;
  t.dtype = dtype;
  t.device = Device::CUDA;
  return t;
}

}  // namespace psgd::cuda
