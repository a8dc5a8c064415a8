// Shared by the files that validate and dispatch the ops of kernels/ops.h (ops*.cpp): the
// device dispatch and the checks every op makes. Internal to the kernels library.
#pragma once

#include <initializer_list>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"
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

// Every defined tensor must live on the context's device.
inline void check_devices(const Context& ctx, const char* op,
                          std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    PSGD_CHECK(!t->defined() || t->device == ctx.device(), op, ": a tensor is on ",
               device_name(t->device), " but the context runs on ", device_name(ctx.device()));
}

// Activation tensors of one call: float32 or bfloat16, all alike (undefined ones are skipped).
inline void check_activations(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    PSGD_CHECK(t->dtype == DType::F32 || t->dtype == DType::BF16, op,
               ": activations must be float32 or bfloat16, got ", dtype_name(t->dtype));
    if (!first) first = t;
    PSGD_CHECK(t->dtype == first->dtype, op, ": activations mix ", dtype_name(first->dtype),
               " and ", dtype_name(t->dtype));
  }
}

// Parameters, statistics and losses: float32.
inline void check_float32(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    PSGD_CHECK(!t->defined() || t->dtype == DType::F32, op, ": expected float32, got ",
               dtype_name(t->dtype));
}

// Activations of the context's element type, for ops whose workspace depends on it.
inline void check_context_activations(const Context& ctx, const char* op,
                                      std::initializer_list<const Tensor*> ts) {
  check_activations(op, ts);
  for (const Tensor* t : ts)
    PSGD_CHECK(!t->defined() || t->dtype == ctx.activation_dtype(), op, ": activations are ",
               dtype_name(t->dtype), " but the context computes in ",
               dtype_name(ctx.activation_dtype()));
}

inline void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  PSGD_CHECK(a.shape == b.shape, op, ": shapes ", a.shape.str(), " and ", b.shape.str(), " differ");
}

}  // namespace psgd::ops
