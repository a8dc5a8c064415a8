// The reference networks: sizes, state_dict names, shapes and initialisation. Whole-network
// gradients are checked against PyTorch (tests/python/parity_nets.py): finite differences
// through thousands of ReLUs in float32 cross too many kinks to say anything.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "nets/nets.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

namespace {

int64_t trainable(const Net& net) {
  return net.params().trainable_count();
}

}  // namespace

TEST_CASE("nets: ResNet-32 for CIFAR-100 has the reference's 472,756 parameters and 200 keys") {
  auto net = make_net("resnet32", 100, Device::CPU, 0);
  CHECK(trainable(*net) == 472756);
  const auto& e = net->params().entries();
  CHECK(e.size() == 200);  // the reference checkpoint's state_dict size
  CHECK(e.front().name == "conv1.weight");
  CHECK(e[5].name == "bn1.num_batches_tracked");
  CHECK(net->params().find("layer2.0.downsample.0.weight") >= 0);
  CHECK(net->params().find("layer3.0.downsample.1.running_var") >= 0);
  CHECK(net->params().find("layer1.0.downsample.0.weight") < 0);
  CHECK(net->params().find("layer3.4.bn2.weight") >= 0);
  CHECK(e.back().name == "fc.bias");
}

TEST_CASE("nets: the ResNet family sizes") {
  // n blocks per stage: each block has two 3x3 convs and two BNs.
  for (int depth : {20, 44, 56, 110}) {
    CAPTURE(depth);
    auto net = resnet_cifar(depth, 10, Device::CPU, 0);
    const int n = (depth - 2) / 6;
    int64_t expected = 16 * 3 * 9 + 32 + 64 * 10 + 10;
    const int widths[] = {16, 32, 64};
    for (int s = 0; s < 3; ++s) {
      const int64_t w = widths[s], in = s ? widths[s - 1] : 16;
      expected += (in * w * 9 + w * w * 9 + 4 * w) + (n - 1) * (2 * w * w * 9 + 4 * w);
      if (s) expected += in * w + 2 * w;  // projection shortcut
    }
    CHECK(trainable(*net) == expected);
  }
  CHECK_THROWS_WITH_AS(resnet_cifar(33, 10, Device::CPU, 0), doctest::Contains("6n + 2"), Error);
  CHECK_THROWS_WITH_AS(make_net("resnet18", 10, Device::CPU, 0),
                       doctest::Contains("unknown architecture 'resnet18'"), Error);
}

TEST_CASE("nets: VGG16-bn keys follow PyTorch's Sequential numbering") {
  auto net = vgg16_bn(100, Device::CPU, 0);
  const ParamStore& p = net->params();
  CHECK(p.find("features.0.weight") >= 0);
  CHECK(p.find("features.1.running_mean") >= 0);
  CHECK(p.find("features.3.weight") >= 0);   // conv after conv-bn-relu
  CHECK(p.find("features.7.weight") >= 0);   // after the first max pool at 6
  CHECK(p.find("features.41.weight") >= 0);  // the last BN
  CHECK(p.find("classifier.0.weight") >= 0);
  CHECK(p.find("classifier.3.bias") >= 0);
  CHECK(p.entry(p.find("classifier.6.weight")).shape == Shape({100, 4096}));
  int64_t expected = 0, in = 3;
  for (int64_t width : {64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512}) {
    expected += in * width * 9 + 2 * width;  // conv without bias, BN weight and bias
    in = width;
  }
  expected += 512 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 100 + 100;
  CHECK(trainable(*net) == expected);
}

TEST_CASE("nets: forward gives (N, classes) logits and initialisation is seeded") {
  Context ctx(Device::CPU, 2);
  HostTensor images(Shape{2, 3, 32, 32});
  fill_uniform(images.t(), -1, 1, 1, 0);
  auto a = make_net("resnet20", 10, Device::CPU, 42), b = make_net("resnet20", 10, Device::CPU, 42);
  auto c = make_net("resnet20", 10, Device::CPU, 43);
  const Tensor& la = a->forward(ctx, images.t(), Mode::Eval);
  CHECK(la.shape == Shape({2, 10}));
  const Tensor& lb = b->forward(ctx, images.t(), Mode::Eval);
  for (int i = 0; i < 20; ++i) CHECK(la.f32()[i] == lb.f32()[i]);
  CHECK(a->params().weights().f32()[0] != c->params().weights().f32()[0]);
  // kaiming-uniform(a = sqrt(5)): |w| <= 1/sqrt(fan_in) = 1/sqrt(27) for conv1
  const Tensor w = a->params().value(0);
  float largest = 0;
  for (int64_t i = 0; i < w.numel(); ++i) largest = std::max(largest, std::fabs(w.f32()[i]));
  CHECK(largest <= 1.0f / std::sqrt(27.0f));
  CHECK(largest > 0.9f / std::sqrt(27.0f));
}

// On the CPU the residual joins compute their ReLUs (BN keeps its own there; the GPU suite checks
// BN + ReLU).
TEST_CASE("nets: a layer computing its ReLU (add + ReLU) changes no bit") {
  Context ctx(Device::CPU, 2, 5);
  std::vector<std::vector<float>> results[2];
  for (const bool fused : {false, true}) {
    auto net = make_net("resnet20", 10, Device::CPU, 3);
    net->set_fusion(fused);
    HostTensor images(Shape{4, 3, 32, 32});
    fill_uniform(images.t(), -2, 2, 9, 0);
    std::vector<int32_t> labels = {1, 7, 3, 0};
    const Tensor y(labels.data(), Shape{4}, Device::CPU);
    for (int step = 0; step < 2; ++step) {  // the second forward runs after BN stats moved
      const Tensor& logits = net->forward(ctx, images.t(), Mode::Train);
      results[fused].emplace_back(logits.f32(), logits.f32() + logits.numel());
      net->loss(ctx, y);
      net->backward(ctx);
    }
    const Tensor g = net->params().grads(), b = net->params().buffers();
    results[fused].emplace_back(g.f32(), g.f32() + g.numel());
    results[fused].emplace_back(b.f32(), b.f32() + b.numel());
    const Tensor& eval = net->forward(ctx, images.t(), Mode::Eval);
    results[fused].emplace_back(eval.f32(), eval.f32() + eval.numel());
  }
  REQUIRE(results[0].size() == results[1].size());
  for (size_t i = 0; i < results[0].size(); ++i) CHECK(results[0][i] == results[1][i]);
}
