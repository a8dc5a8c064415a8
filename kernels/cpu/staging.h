// bf16 activations for the CPU's float32-only kernels (convolution, linear layers): each input
// is widened into a float32 copy in the workspace, after the scratch the float32 kernel itself
// uses, and each result is rounded back into its bf16 tensor. The weights are multiplied as
// their bf16 roundings, since cuDNN and cuBLAS take one element type for both operands. The
// result is that of the float32 kernel on those values, rounded once: what the GPU's bf16 paths
// compute (and PyTorch's autocast).
#pragma once

#include "engine/context.h"
#include "kernels/ops.h"

namespace psgd::cpu {

// Workspace floats for staged copies of tensors of these shapes.
int64_t staging_floats(std::initializer_list<Shape> shapes);

class Staging {
 public:
  // The float32 kernel uses the first `kernel_floats` floats of the workspace.
  Staging(const Context& ctx, int64_t kernel_floats)
      : ctx_(ctx), bf16_(ctx.activation_dtype() == DType::BF16), next_(kernel_floats) {}

  // A float32 copy of t (bf16), or t itself where it is float32 already.
  Tensor widened(const Tensor& t);
  // The float32 weights w as the bf16 mode multiplies them: a copy rounded to bf16 values, or w
  // itself with float32 activations.
  Tensor weights(const Tensor& w);
  // Where a float32 kernel writes a result for `result` (bf16); `result` itself where it is
  // float32. With `mode` Accumulate the copy starts as result's values.
  Tensor output_for(const Tensor& result, ops::GradMode mode = ops::GradMode::Overwrite);

 private:
  Tensor take(const Shape& shape);

  const Context& ctx_;
  const bool bf16_;
  int64_t next_;
};

// result = staged (float32) rounded to bf16; nothing where result is float32 (staged is result).
void unstage(const Tensor& staged, const Tensor& result);
// Rounds float32 values to bf16 precision in place: the bf16 mode's filter gradients, which
// cuDNN returns as bf16.
void round_to_bf16_precision(const Tensor& t);

}  // namespace psgd::cpu
