// The layer graph: planning, gradient summing where a tensor has two consumers, and misuse.
#include <doctest/doctest.h>

#include "engine/layers/batch_norm.h"
#include "engine/layers/conv2d.h"
#include "engine/layers/elementwise.h"
#include "engine/layers/linear.h"
#include "engine/layers/pooling.h"
#include "nets/init.h"
#include "tests/support/gradcheck.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

namespace {

// input -> conv -> t1; t1 -> bn -> relu -> t2; add(t1, t2) -> pool -> fc: t1 has two consumers.
std::unique_ptr<Net> two_consumer_net() {
  auto net = std::make_unique<Net>("toy", Shape{3, 5, 5}, 3);
  ParamStore& p = net->params();
  const int t1 = net->add(std::make_unique<Conv2d>(p, "conv", 3, 4, 3, 1, 1), {Net::kInput});
  int t2 = net->add(std::make_unique<BatchNorm>(p, "bn", 4), {t1});
  t2 = net->add(std::make_unique<ReLU>("relu"), {t2});
  int x = net->add(std::make_unique<Add>("add"), {t1, t2});
  x = net->add(std::make_unique<Pool2d>("pool", PoolKind::Average, 5, 5), {x});
  net->add(std::make_unique<Linear>(p, "fc", 4, 3), {x});
  net->finalize(Device::CPU);
  init_pytorch_default(p, 3);
  return net;
}

}  // namespace

TEST_CASE("net: gradients of a tensor with two consumers are summed") {
  auto net = two_consumer_net();
  check_net_gradients(*net, 3, {.step = 2e-4f, .max_probes = 40});
}

TEST_CASE("net: replanning for a smaller batch reuses the arena") {
  auto net = two_consumer_net();
  Context ctx(Device::CPU, 1);
  HostTensor big(Shape{4, 3, 5, 5}), small(Shape{2, 3, 5, 5});
  fill_uniform(big.t(), -1, 1, 1, 0);
  for (int64_t i = 0; i < small.numel(); ++i) small[i] = big[i];
  const Tensor& a = net->forward(ctx, big.t(), Mode::Eval);
  const std::vector<float> first(a.f32(), a.f32() + 6);
  CHECK(net->planned_batch() == 4);
  const Tensor& b = net->forward(ctx, small.t(), Mode::Eval);
  CHECK(net->planned_batch() == 2);
  CHECK(b.shape == Shape({2, 3}));
  for (int i = 0; i < 6; ++i) CHECK(b.f32()[i] == first[i]);  // eval is per-sample
}

TEST_CASE("net: loss and backward from labels match backward from dlogits") {
  auto net = two_consumer_net();
  Context ctx(Device::CPU, 1);
  HostTensor images(Shape{3, 3, 5, 5});
  fill_uniform(images.t(), -1, 1, 2, 0);
  std::vector<int32_t> labels = {2, 0, 1};
  const Tensor y(labels.data(), Shape{3}, Device::CPU);
  net->forward(ctx, images.t(), Mode::Train);
  net->loss(ctx, y);
  CHECK(net->loss_value() > 0.0f);
  net->backward(ctx);
  const Tensor g = net->params().grads();
  const std::vector<float> from_labels(g.f32(), g.f32() + g.numel());

  HostTensor dlogits(Shape{3, 3}), loss(Shape{1});
  net->forward(ctx, images.t(), Mode::Train);
  ops::softmax_cross_entropy(ctx, net->logits(), y, loss.t(), dlogits.t());
  net->backward(ctx, dlogits.t());
  for (int64_t i = 0; i < g.numel(); ++i) CHECK(g.f32()[i] == from_labels[i]);
}

TEST_CASE("net: misuse is a clear error") {
  auto net = two_consumer_net();
  Context ctx(Device::CPU, 1);
  HostTensor images(Shape{2, 3, 5, 5}), wrong(Shape{2, 1, 5, 5});
  CHECK_THROWS_WITH_AS(net->backward(ctx), doctest::Contains("needs a Train-mode forward"), Error);
  net->forward(ctx, images.t(), Mode::Train);
  CHECK_THROWS_WITH_AS(net->backward(ctx), doctest::Contains("backward() before loss()"), Error);
  CHECK_THROWS_WITH_AS(net->forward(ctx, wrong.t(), Mode::Eval),
                       doctest::Contains("images has shape (2, 1, 5, 5)"), Error);
  CHECK_THROWS_AS(net->add(std::make_unique<ReLU>("late"), {1}), Error);

  Net bad("bad", Shape{3, 4, 4}, 2);
  CHECK_THROWS_WITH_AS(bad.add(std::make_unique<ReLU>("r"), {5}),
                       doctest::Contains("input tensor 5 does not exist"), Error);
  CHECK_THROWS_WITH_AS(bad.add(std::make_unique<Add>("a"), {0}),
                       doctest::Contains("takes 2 inputs"), Error);
  bad.add(std::make_unique<ReLU>("r"), {0});
  bad.finalize(Device::CPU);
  CHECK_THROWS_WITH_AS(bad.plan(ctx, 2), doctest::Contains("expected logits (2, 2)"), Error);
}
