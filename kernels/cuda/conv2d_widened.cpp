// bf16 convolutions run on float32 copies through cuDNN's float32 kernels, where the race at
// planning time found that faster than its bf16 ones (on an H100 the backward of ResNet-32's
// stride-2 3x3 convolutions took ~1.1 ms in bf16 against 75-95 us in TF32). The result is the
// bf16 kernels' to float32 summation order: the operands convert exactly, the products are
// exact in TF32, and each stored value is rounded once.
#include "kernels/cuda/conv2d_plan.h"
#include "kernels/cuda/cuda_ops.h"

namespace psgd::cuda {

void widened_forward(const Context& ctx, const ConvPlan& f, const Tensor& x, const Tensor& filter,
                     const WidenedBuffers& b, const Tensor& y) {
  cast(x, b.x);
  cast(filter, b.w);
  cudnn_forward(ctx, f, b.x.data, b.w.data, b.workspace, b.y.data);
  cast(b.y, y);
}

void widened_backward_filter(const Context& ctx, const ConvPlan& f, const Tensor& x,
                             const Tensor& dy, const WidenedBuffers& b,
                             const Tensor& filter_scratch, const Tensor& dw) {
  cast(x, b.x);
  cast(dy, b.y);
  cudnn_backward_filter(ctx, f, b.x.data, b.y.data, b.workspace, dw.data);
  cast(dw, filter_scratch);
  cast(filter_scratch, dw);
}

void widened_backward_data(const Context& ctx, const ConvPlan& f, const Tensor& filter,
                           const Tensor& dy, bool dy_widened, const WidenedBuffers& b,
                           ops::GradMode dx_mode, const Tensor& dx) {
  if (!dy_widened) cast(dy, b.y);
  cast(filter, b.w);
  // Accumulating, the sum starts from dx's values, so that dx is still rounded once.
  const bool accumulate = dx_mode == ops::GradMode::Accumulate;
  if (accumulate) cast(dx, b.x);
  cudnn_backward_data(ctx, f, b.w.data, b.y.data, b.workspace, accumulate ? 1.0f : 0.0f, b.x.data);
  cast(b.x, dx);
}

}  // namespace psgd::cuda
