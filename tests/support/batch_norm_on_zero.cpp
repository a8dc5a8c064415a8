#include "tests/support/batch_norm_on_zero.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/host_tensor.h"

namespace psgd::test {
namespace {

// A float32 or bfloat16 tensor on a device, with its host values as floats (bf16 ones rounded on
// upload, so that the host computes with the values the device holds).
struct Staged {
  Context& ctx;
  HostTensor host;
  DeviceBuffer buffer;
  Tensor t;
  Staged(Context& c, const Shape& shape, float value = 0.0f, DType dtype = DType::F32)
      : ctx(c),
        host(shape, value),
        buffer(c.device(), static_cast<size_t>(shape.numel()) * dtype_size(dtype)),
        t(buffer.view(0, shape, dtype)) {
    upload();
  }
  void upload() {
    if (t.dtype == DType::F32) {
      memory_copy(t.data, t.device, host.data(), Device::CPU, t.bytes());
      return;
    }
    std::vector<bf16> values(static_cast<size_t>(host.numel()));
    for (size_t i = 0; i < values.size(); ++i) {
      values[i] = to_bf16(host[static_cast<int64_t>(i)]);
      host[static_cast<int64_t>(i)] = to_float(values[i]);
    }
    memory_copy(t.data, t.device, values.data(), Device::CPU, t.bytes());
  }
  HostTensor& download() {
    ctx.synchronize();
    if (t.dtype == DType::F32) {
      memory_copy(host.data(), Device::CPU, t.data, t.device, t.bytes());
      return host;
    }
    std::vector<bf16> values(static_cast<size_t>(host.numel()));
    memory_copy(values.data(), Device::CPU, t.data, t.device, t.bytes());
    for (size_t i = 0; i < values.size(); ++i) host[static_cast<int64_t>(i)] = to_float(values[i]);
    return host;
  }
};

struct MaskSides {
  int64_t open = 0, closed = 0;  // outputs built to land on 0, by the side they took
};

MaskSides check_one_shape(Context& ctx, const Shape& xs) {
  const int64_t n = xs[0], c = xs[1], hw = xs[2] * xs[3];
  const Shape cs{c};
  const DType activations = ctx.activation_dtype();
  Staged x(ctx, xs, 0.0f, activations), dy(ctx, xs, 0.0f, activations),
      y(ctx, xs, 0.0f, activations), gamma(ctx, cs), beta(ctx, cs), rm(ctx, cs), rv(ctx, cs, 1.0f),
      mean(ctx, cs), invstd(ctx, cs);
  fill_uniform(x.host.t(), -2, 3, 9, 0);
  fill_uniform(dy.host.t(), -1, 1, 9, 1);
  fill_uniform(gamma.host.t(), 0.5, 2, 9, 2);
  const auto at = [&](int64_t image, int64_t ch, int64_t j) { return (image * c + ch) * hw + j; };
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < hw; j += 3) x.host[at(i, ch, j)] = x.host[at(0, ch, 1)];
  for (Staged* s : {&x, &dy, &gamma}) s->upload();
  ctx.reserve_workspace(ops::batch_norm_workspace_floats(ctx, xs));

  ops::batch_norm_forward_train(ctx, x.t, gamma.t, beta.t, rm.t, rv.t, {}, y.t, mean.t, invstd.t);
  const HostTensor &mu = mean.download(), &is = invstd.download();
  for (int64_t ch = 0; ch < c; ++ch) {
    const float product = (x.host[at(0, ch, 1)] - mu[ch]) * (gamma.host[ch] * is[ch]);
    beta.host[ch] = -product;
  }
  beta.upload();
  ops::batch_norm_forward_train(ctx, x.t, gamma.t, beta.t, rm.t, rv.t, {.relu = true}, y.t, mean.t,
                                invstd.t);
  MaskSides sides;
  const HostTensor& relu_y = y.download();
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t i = 0; i < n; ++i) (relu_y[at(i, ch, 0)] > 0.0f ? sides.open : sides.closed) += 1;

  for (ops::GradMode mode : {ops::GradMode::Overwrite, ops::GradMode::Accumulate}) {
    CAPTURE(static_cast<int>(mode));
    Staged read_dx(ctx, xs, 0.25f, activations), recomputed_dx(ctx, xs, 0.25f, activations);
    Staged read_dgamma(ctx, cs), read_dbeta(ctx, cs), recomputed_dgamma(ctx, cs),
        recomputed_dbeta(ctx, cs);
    ops::batch_norm_backward(ctx, x.t, dy.t, gamma.t, mean.t, invstd.t, read_dx.t, mode,
                             read_dgamma.t, read_dbeta.t, {.output = y.t});
    ops::batch_norm_backward(ctx, x.t, dy.t, gamma.t, mean.t, invstd.t, recomputed_dx.t, mode,
                             recomputed_dgamma.t, recomputed_dbeta.t, {.beta = beta.t});
    const HostTensor &a = read_dx.download(), &b = recomputed_dx.download();
    for (int64_t i = 0; i < a.numel(); ++i) REQUIRE(a[i] == b[i]);
    for (const auto& [p, q] :
         {std::pair{&read_dgamma, &recomputed_dgamma}, std::pair{&read_dbeta, &recomputed_dbeta}}) {
      const HostTensor &u = p->download(), &v = q->download();
      for (int64_t ch = 0; ch < c; ++ch) REQUIRE(u[ch] == v[ch]);
    }
  }
  return sides;
}

}  // namespace

void check_relu_mask_on_zero(Context& ctx, std::initializer_list<Shape> x_shapes,
                             BothSidesIn where) {
  MaskSides all;
  for (const Shape& xs : x_shapes) {
    CAPTURE(xs.str());
    const MaskSides sides = check_one_shape(ctx, xs);
    MESSAGE("outputs on 0: ", sides.open, " open, ", sides.closed, " closed");
#ifdef __FMA__
    if (where == BothSidesIn::EachShape) {
      CHECK(sides.open > 0);
      CHECK(sides.closed > 0);
    }
#endif
    all.open += sides.open;
    all.closed += sides.closed;
  }
#ifdef __FMA__
  if (where == BothSidesIn::AllShapes) {
    CHECK(all.open > 0);
    CHECK(all.closed > 0);
  }
#endif
}

}  // namespace psgd::test
