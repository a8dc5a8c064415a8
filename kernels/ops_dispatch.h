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

inline void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  PSGD_CHECK(a.shape == b.shape, op, ": shapes ", a.shape.str(), " and ", b.shape.str(), " differ");
}

}  // namespace psgd::ops
