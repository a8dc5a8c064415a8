// The bf16 mode on the CPU: the rounding itself, and every op that takes activations. Each op
// runs twice on the same values, once on float32 tensors and once on bfloat16 ones; every bf16
// output must be the float32 output rounded once, to the bit, and every float32 output (weight
// gradients, statistics, losses) must be identical, except where the GPU libraries force a bf16
// rounding (convolution and linear weights, convolution filter gradients), which the float32 run
// then makes explicitly. That is the contract the GPU's bf16 kernels are tested against in turn.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/batch_norm_on_zero.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

namespace {

constexpr int kThreads = 2;

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// One tensor's values twice: float32 and bfloat16. The float32 values are rounded to bf16 first,
// so that both runs of an op start from the same numbers.
class Twin {
 public:
  explicit Twin(Shape shape) : f_(shape), b_(static_cast<size_t>(shape.numel())) { sync(); }
  Twin(Shape shape, float lo, float hi, uint64_t stream) : Twin(shape) {
    fill_uniform(f_.t(), lo, hi, 11, stream);
    sync();
  }
  Twin(const Twin&) = delete;
  Twin& operator=(const Twin&) = delete;

  const Tensor& f() const { return f_.t(); }
  Tensor b() { return Tensor(b_.data(), f_.t().shape, Device::CPU); }
  // Every bf16 value is the float32 result rounded once. Afterwards both sides hold the rounded
  // values again, for the next op to start from.
  void check_rounded(const char* what) {
    int64_t wrong = 0, first = -1;
    for (size_t i = 0; i < b_.size(); ++i)
      if (b_[i].bits != to_bf16(f_[static_cast<int64_t>(i)]).bits) {
        if (first < 0) first = static_cast<int64_t>(i);
        ++wrong;
      }
    INFO(std::string(what), ": ", wrong, " of ", b_.size(), " values differ, first at ", first);
    CHECK(wrong == 0);
    sync();
  }

 private:
  // Rounds the float32 values and copies them to the bf16 side.
  void sync() {
    for (size_t i = 0; i < b_.size(); ++i) {
      b_[i] = to_bf16(f_[static_cast<int64_t>(i)]);
      f_[static_cast<int64_t>(i)] = to_float(b_[i]);
    }
  }

  HostTensor f_;
  std::vector<bf16> b_;
};

// Float32 tensors of the two runs (parameters, statistics) must agree to the bit.
void check_identical(const char* what, const HostTensor& a, const HostTensor& b) {
  int64_t wrong = 0;
  for (int64_t i = 0; i < a.numel(); ++i) wrong += bits_of(a[i]) != bits_of(b[i]);
  INFO(std::string(what), ": ", wrong, " of ", a.numel(), " values differ");
  CHECK(wrong == 0);
}

// The weights as the bf16 mode multiplies them: a copy rounded to bf16 values.
void round_values(const HostTensor& from, HostTensor& to) {
  for (int64_t i = 0; i < from.numel(); ++i) to[i] = to_float(to_bf16(from[i]));
}

// The bf16 run's filter gradient is the float32 run's rounded to bf16 precision (as cuDNN
// returns it).
void check_rounded_values(const char* what, const HostTensor& f32, const HostTensor& rounded) {
  int64_t wrong = 0;
  for (int64_t i = 0; i < f32.numel(); ++i)
    wrong += bits_of(rounded[i]) != bits_of(to_float(to_bf16(f32[i])));
  INFO(std::string(what), ": ", wrong, " of ", f32.numel(), " values differ");
  CHECK(wrong == 0);
}

struct Contexts {
  Context f32{Device::CPU, kThreads, 0, {}};
  Context bf16{Device::CPU, kThreads, 0, {.bf16 = true}};
};

const ops::GradMode kModes[] = {ops::GradMode::Overwrite, ops::GradMode::Accumulate};

}  // namespace

TEST_CASE("bf16: rounding to nearest even, as torch.bfloat16") {
  CHECK(to_bf16(1.0f).bits == 0x3f80);
  CHECK(to_float(bf16{0x3f80}) == 1.0f);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  CHECK(to_bf16(1.0f + std::ldexp(1.0f, -8)).bits == 0x3f80);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up, to the even one.
  CHECK(to_bf16(1.0f + 3.0f * std::ldexp(1.0f, -8)).bits == 0x3f82);
  // Just above a tie rounds up, just below rounds down.
  CHECK(to_bf16(float_of(0x3f808001u)).bits == 0x3f81);
  CHECK(to_bf16(float_of(0x3f807fffu)).bits == 0x3f80);
  CHECK(to_bf16(-2.5f).bits == 0xc020);
  // The largest float32 rounds to infinity; infinities and signed zeros stay.
  CHECK(to_bf16(std::numeric_limits<float>::max()).bits == 0x7f80);
  CHECK(to_bf16(-std::numeric_limits<float>::infinity()).bits == 0xff80);
  CHECK(to_bf16(-0.0f).bits == 0x8000);
  // A NaN stays a NaN, even one whose payload sits only in the dropped bits.
  CHECK(std::isnan(to_float(to_bf16(float_of(0x7f800001u)))));
  CHECK(std::isnan(to_float(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST_CASE("bf16: cast rounds once and widens exactly") {
  Context ctx(Device::CPU, kThreads);
  HostTensor x(Shape{1000});
  fill_uniform(x.t(), -3.0f, 3.0f, 1, 1);
  std::vector<bf16> b(1000);
  const Tensor bt(b.data(), x.t().shape, Device::CPU);
  ops::cast(ctx, x.t(), bt);
  HostTensor back(x.t().shape);
  ops::cast(ctx, bt, back.t());
  for (int64_t i = 0; i < 1000; ++i) {
    REQUIRE(b[i].bits == to_bf16(x[i]).bits);
    REQUIRE(back[i] == to_float(b[i]));
    REQUIRE(std::fabs(back[i] - x[i]) <= std::ldexp(std::fabs(x[i]), -8));
  }
}

TEST_CASE("bf16: elementwise ops, dropout and their gradients") {
  Contexts c;
  const Shape s{3, 5, 7, 9};
  Twin a(s, -1.0f, 1.0f, 1), b(s, -1.0f, 1.0f, 2), y(s);
  ops::relu_forward(c.f32, a.f(), y.f());
  ops::relu_forward(c.bf16, a.b(), y.b());
  y.check_rounded("relu");
  ops::add_forward(c.f32, a.f(), b.f(), y.f());
  ops::add_forward(c.bf16, a.b(), b.b(), y.b());
  y.check_rounded("add");
  ops::add_relu_forward(c.f32, a.f(), b.f(), y.f());
  ops::add_relu_forward(c.bf16, a.b(), b.b(), y.b());
  y.check_rounded("add_relu");
  ops::dropout_forward(c.f32, a.f(), 0.3f, 5, 9, y.f());
  ops::dropout_forward(c.bf16, a.b(), 0.3f, 5, 9, y.b());
  y.check_rounded("dropout");
  for (ops::GradMode mode : kModes) {
    CAPTURE(static_cast<int>(mode));
    Twin dx(s, -1.0f, 1.0f, 3);
    ops::relu_backward(c.f32, a.f(), b.f(), dx.f(), mode);
    ops::relu_backward(c.bf16, a.b(), b.b(), dx.b(), mode);
    dx.check_rounded("relu_backward");
    ops::grad_pass(c.f32, b.f(), dx.f(), mode);
    ops::grad_pass(c.bf16, b.b(), dx.b(), mode);
    dx.check_rounded("grad_pass");
    ops::dropout_backward(c.f32, b.f(), 0.3f, 5, 9, dx.f(), mode);
    ops::dropout_backward(c.bf16, b.b(), 0.3f, 5, 9, dx.b(), mode);
    dx.check_rounded("dropout_backward");
  }
}

TEST_CASE("bf16: pooling and its gradients, overlapping windows included") {
  Contexts c;
  for (const ops::Pool2dGeometry g : {ops::Pool2dGeometry{2, 2}, ops::Pool2dGeometry{3, 2}}) {
    CAPTURE(g.kernel);
    const Shape xs{2, 3, 9, 11};
    const Shape ys = ops::pool2d_output_shape(xs, g);
    Twin x(xs, -1.0f, 1.0f, 3), y(ys), dy(ys, -1.0f, 1.0f, 5);
    ops::avg_pool_forward(c.f32, x.f(), g, y.f());
    ops::avg_pool_forward(c.bf16, x.b(), g, y.b());
    y.check_rounded("avg_pool");
    ops::max_pool_forward(c.f32, x.f(), g, y.f());
    ops::max_pool_forward(c.bf16, x.b(), g, y.b());
    y.check_rounded("max_pool");
    for (ops::GradMode mode : kModes) {
      Twin dx(xs, -1.0f, 1.0f, 6);
      ops::avg_pool_backward(c.f32, dy.f(), g, dx.f(), mode);
      ops::avg_pool_backward(c.bf16, dy.b(), g, dx.b(), mode);
      dx.check_rounded("avg_pool_backward");
      ops::max_pool_backward(c.f32, x.f(), dy.f(), g, dx.f(), mode);
      ops::max_pool_backward(c.bf16, x.b(), dy.b(), g, dx.b(), mode);
      dx.check_rounded("max_pool_backward");
    }
  }
}

TEST_CASE("bf16: batch norm, whole and in the stages of synchronised BN") {
  Contexts c;
  // Planes of 35 values written the ordinary way; of 135 and 1,221 (two chunks) streamed.
  for (const Shape xs : {Shape{4, 6, 5, 7}, Shape{9, 6}, Shape{3, 6, 9, 15}, Shape{2, 6, 33, 37}}) {
    CAPTURE(xs.str());
    const Shape cs{6};
    Twin x(xs, 2.0f, 5.0f, 1), y(xs), dy(xs, -1.0f, 1.0f, 2);
    HostTensor gamma(cs), beta(cs), stats_f[2] = {HostTensor(cs), HostTensor(cs, 1.0f)},
                                    stats_b[2] = {HostTensor(cs), HostTensor(cs, 1.0f)};
    fill_uniform(gamma.t(), 0.5f, 1.5f, 1, 3);
    fill_uniform(beta.t(), -0.5f, 0.5f, 1, 4);
    HostTensor mean_f(cs), mean_b(cs), invstd_f(cs), invstd_b(cs);
    for (const bool relu : {false, true}) {
      const ops::BatchNormParams p{.relu = relu};
      ops::batch_norm_forward_train(c.f32, x.f(), gamma.t(), beta.t(), stats_f[0].t(),
                                    stats_f[1].t(), p, y.f(), mean_f.t(), invstd_f.t());
      ops::batch_norm_forward_train(c.bf16, x.b(), gamma.t(), beta.t(), stats_b[0].t(),
                                    stats_b[1].t(), p, y.b(), mean_b.t(), invstd_b.t());
      y.check_rounded("forward_train");
      check_identical("saved mean", mean_f, mean_b);
      check_identical("saved invstd", invstd_f, invstd_b);
      check_identical("running mean", stats_f[0], stats_b[0]);
      check_identical("running var", stats_f[1], stats_b[1]);
      ops::batch_norm_forward_eval(c.f32, x.f(), gamma.t(), beta.t(), stats_f[0].t(),
                                   stats_f[1].t(), p, y.f());
      ops::batch_norm_forward_eval(c.bf16, x.b(), gamma.t(), beta.t(), stats_b[0].t(),
                                   stats_b[1].t(), p, y.b());
      y.check_rounded("forward_eval");
      // With the ReLU, its mask read from an output or recomputed from x.
      for (const bool from_x : {false, true})
        for (ops::GradMode mode : kModes) {
          if (from_x && !relu) continue;
          Twin dx(xs, -1.0f, 1.0f, 7), relu_y(xs, -1.0f, 1.0f, 8);
          HostTensor dgamma_f(cs), dgamma_b(cs), dbeta_f(cs), dbeta_b(cs);
          const bool read = relu && !from_x;
          const Tensor mask_beta = from_x ? beta.t() : Tensor();
          ops::batch_norm_backward(c.f32, x.f(), dy.f(), gamma.t(), mean_f.t(), invstd_f.t(),
                                   dx.f(), mode, dgamma_f.t(), dbeta_f.t(),
                                   {.output = read ? relu_y.f() : Tensor(), .beta = mask_beta});
          ops::batch_norm_backward(c.bf16, x.b(), dy.b(), gamma.t(), mean_b.t(), invstd_b.t(),
                                   dx.b(), mode, dgamma_b.t(), dbeta_b.t(),
                                   {.output = read ? relu_y.b() : Tensor(), .beta = mask_beta});
          dx.check_rounded("backward");
          check_identical("dgamma", dgamma_f, dgamma_b);
          check_identical("dbeta", dbeta_f, dbeta_b);
        }
    }

    // The stages: moments, normalisation, gradient sums and the input gradient.
    HostTensor shift(cs, 3.0f);
    std::vector<double> moments_f(12), moments_b(12), sums_f(12), sums_b(12);
    const auto sums_view = [](std::vector<double>& v) {
      return Tensor(v.data(), Shape{2, 6}, Device::CPU);
    };
    ops::batch_norm_moments(c.f32, x.f(), shift.t(), sums_view(moments_f));
    ops::batch_norm_moments(c.bf16, x.b(), shift.t(), sums_view(moments_b));
    CHECK(moments_f == moments_b);
    ops::batch_norm_normalize(c.f32, x.f(), gamma.t(), beta.t(), mean_f.t(), invstd_f.t(), y.f());
    ops::batch_norm_normalize(c.bf16, x.b(), gamma.t(), beta.t(), mean_f.t(), invstd_f.t(), y.b());
    y.check_rounded("normalize");
    HostTensor dgamma_f(cs), dgamma_b(cs), dbeta_f(cs), dbeta_b(cs);
    ops::batch_norm_backward_reduce(c.f32, x.f(), dy.f(), mean_f.t(), invstd_f.t(),
                                    sums_view(sums_f), dgamma_f.t(), dbeta_f.t());
    ops::batch_norm_backward_reduce(c.bf16, x.b(), dy.b(), mean_f.t(), invstd_f.t(),
                                    sums_view(sums_b), dgamma_b.t(), dbeta_b.t());
    CHECK(sums_f == sums_b);
    check_identical("reduced dgamma", dgamma_f, dgamma_b);
    for (ops::GradMode mode : kModes) {
      Twin dx(xs, -1.0f, 1.0f, 9);
      const int64_t count = xs.numel() / 6;
      ops::batch_norm_backward_input(c.f32, x.f(), dy.f(), gamma.t(), mean_f.t(), invstd_f.t(),
                                     sums_view(sums_f), count, dx.f(), mode);
      ops::batch_norm_backward_input(c.bf16, x.b(), dy.b(), gamma.t(), mean_f.t(), invstd_f.t(),
                                     sums_view(sums_f), count, dx.b(), mode);
      dx.check_rounded("backward_input");
    }
  }
}

TEST_CASE(
    "bf16: batch norm + ReLU backward recomputes the ReLU's mask from x to the bit, at "
    "outputs on 0") {
  // The bf16 kernels' recomputed mask against the one read from the ReLU's bf16 output, at
  // outputs a few ulps from 0 (not at the outputs under 2^-134 that only bf16 rounds to 0: these
  // are a product's rounding error). Planes written the ordinary way and streamed in chunks.
  Context bf16(Device::CPU, kThreads, 0, {.bf16 = true});
  check_relu_mask_on_zero(bf16, {Shape{4, 16, 5, 7}, Shape{2, 16, 33, 37}}, BothSidesIn::EachShape);
}

TEST_CASE("bf16: loss, accuracy, metrics and activation quantization") {
  Contexts c;
  const Shape zs{13, 10};
  Twin logits(zs, -4.0f, 4.0f, 1), dlogits(zs);
  std::vector<int32_t> label_values(13);
  for (int i = 0; i < 13; ++i) label_values[i] = (i * 7) % 10;
  const Tensor labels(label_values.data(), Shape{13}, Device::CPU);
  HostTensor loss_f(Shape{1}), loss_b(Shape{1});
  ops::softmax_cross_entropy(c.f32, logits.f(), labels, loss_f.t(), dlogits.f());
  ops::softmax_cross_entropy(c.bf16, logits.b(), labels, loss_b.t(), dlogits.b());
  dlogits.check_rounded("dlogits");
  check_identical("loss", loss_f, loss_b);
  for (int k : {1, 3})
    CHECK(ops::topk_correct(c.f32, logits.f(), labels, k) ==
          ops::topk_correct(c.bf16, logits.b(), labels, k));
  std::vector<double> totals_f(ops::kMetricFields), totals_b(ops::kMetricFields);
  ops::accumulate_metrics(c.f32, logits.f(), labels, loss_f.t(),
                          Tensor(totals_f.data(), Shape{ops::kMetricFields}, Device::CPU));
  ops::accumulate_metrics(c.bf16, logits.b(), labels, loss_b.t(),
                          Tensor(totals_b.data(), Shape{ops::kMetricFields}, Device::CPU));
  CHECK(totals_f == totals_b);

  HostTensor range_f(Shape{2}), range_b(Shape{2});
  ops::tensor_min_max(c.f32, logits.f(), range_f.t());
  ops::tensor_min_max(c.bf16, logits.b(), range_b.t());
  check_identical("min and max", range_f, range_b);
  Twin q(zs);
  ops::quantize_activations(c.f32, logits.f(), 0.3f, 15, q.f());
  ops::quantize_activations(c.bf16, logits.b(), 0.3f, 15, q.b());
  q.check_rounded("quantize_activations");
}

// The bf16 runs get the float32 weights; the float32 runs their bf16 roundings.
TEST_CASE("bf16: convolutions (direct and GEMM) and linear layers widen, compute, round once") {
  Contexts c;
  struct ConvCase {
    Shape x, w;
    ops::Conv2dGeometry g;
  };
  for (const ConvCase& k : {ConvCase{{3, 5, 16, 16}, {8, 5, 3, 3}, {1, 1}},   // direct
                            ConvCase{{2, 4, 9, 7}, {6, 4, 3, 3}, {2, 1}},     // GEMM
                            ConvCase{{2, 4, 8, 8}, {6, 4, 1, 1}, {2, 0}}}) {  // downsampling
    CAPTURE(k.x.str());
    const Shape ys = ops::conv2d_output_shape(k.x, k.w, k.g);
    for (Context* ctx : {&c.f32, &c.bf16})
      ctx->reserve_workspace(ops::conv2d_workspace_floats(*ctx, k.x, k.w, k.g));
    Twin x(k.x, -1.0f, 1.0f, 1), y(ys), dy(ys, -1.0f, 1.0f, 2);
    HostTensor w(k.w), w_rounded(k.w);
    fill_uniform(w.t(), -0.5f, 0.5f, 1, 3);
    round_values(w, w_rounded);
    ops::conv2d_forward(c.f32, x.f(), w_rounded.t(), k.g, y.f());
    ops::conv2d_forward(c.bf16, x.b(), w.t(), k.g, y.b());
    y.check_rounded("conv2d_forward");
    for (ops::GradMode mode : kModes) {
      Twin dx(k.x, -1.0f, 1.0f, 4);
      HostTensor dw_f(k.w), dw_b(k.w);
      ops::conv2d_backward(c.f32, x.f(), w_rounded.t(), dy.f(), k.g, dx.f(), mode, dw_f.t());
      ops::conv2d_backward(c.bf16, x.b(), w.t(), dy.b(), k.g, dx.b(), mode, dw_b.t());
      dx.check_rounded("conv2d_backward dx");
      check_rounded_values("conv2d_backward dw", dw_f, dw_b);
    }
  }

  const Shape xs{5, 3, 2, 2}, ws{7, 12};
  for (Context* ctx : {&c.f32, &c.bf16})
    ctx->reserve_workspace(ops::linear_workspace_floats(*ctx, xs, ws));
  Twin x(xs, -1.0f, 1.0f, 5), y(Shape{5, 7}), dy(Shape{5, 7}, -1.0f, 1.0f, 6);
  HostTensor w(ws), w_rounded(ws), b(Shape{7});
  fill_uniform(w.t(), -0.5f, 0.5f, 1, 7);
  round_values(w, w_rounded);
  fill_uniform(b.t(), -0.5f, 0.5f, 1, 8);
  ops::linear_forward(c.f32, x.f(), w_rounded.t(), b.t(), y.f());
  ops::linear_forward(c.bf16, x.b(), w.t(), b.t(), y.b());
  y.check_rounded("linear_forward");
  for (ops::GradMode mode : kModes) {
    Twin dx(xs, -1.0f, 1.0f, 9);
    HostTensor dw_f(ws), dw_b(ws), db_f(Shape{7}), db_b(Shape{7});
    ops::linear_backward(c.f32, x.f(), w_rounded.t(), dy.f(), dx.f(), mode, dw_f.t(), db_f.t());
    ops::linear_backward(c.bf16, x.b(), w.t(), dy.b(), dx.b(), mode, dw_b.t(), db_b.t());
    dx.check_rounded("linear_backward dx");
    check_identical("linear dw", dw_f, dw_b);
    check_identical("linear db", db_f, db_b);
  }
}

TEST_CASE("bf16: mixed element types and a context of the other type are errors") {
  Contexts c;
  Twin a(Shape{2, 3, 4, 4}, -1.0f, 1.0f, 1), y(Shape{2, 3, 4, 4});
  CHECK_THROWS_WITH_AS(ops::relu_forward(c.f32, a.f(), y.b()),
                       doctest::Contains("relu_forward: activations mix float32 and bfloat16"),
                       Error);
  HostTensor w(Shape{3, 3, 3, 3}), gamma(Shape{3});
  Twin conv_y(Shape{2, 3, 4, 4});
  CHECK_THROWS_WITH_AS(ops::conv2d_forward(c.f32, a.b(), w.t(), {1, 1}, conv_y.b()),
                       doctest::Contains("conv2d_forward: activations are bfloat16 but the "
                                         "context computes in float32"),
                       Error);
  std::vector<bf16> bf16_gamma(3);
  const Tensor bad_gamma(bf16_gamma.data(), Shape{3}, Device::CPU);
  CHECK_THROWS_WITH_AS(ops::batch_norm_forward_eval(c.bf16, a.b(), bad_gamma, gamma.t(), gamma.t(),
                                                    gamma.t(), {}, y.b()),
                       doctest::Contains("expected float32, got bfloat16"), Error);
}
