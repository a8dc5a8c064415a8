// ResNet for CIFAR (He et al. 2016, section 4.2) as the reference builds it: a 3x3 stem, three
// stages of BasicBlocks at widths 16/32/64, projection shortcuts (1x1 conv + BN) where the
// shape changes, 8x8 average pooling and a linear classifier.
#include "engine/layers/batch_norm.h"
#include "engine/layers/conv2d.h"
#include "engine/layers/elementwise.h"
#include "engine/layers/linear.h"
#include "engine/layers/pooling.h"
#include "nets/init.h"
#include "nets/nets.h"

namespace psgd {
namespace {

constexpr int kCifarSide = 32;

int conv_bn(Net& net, int x, const std::string& conv, const std::string& bn, int in, int out,
            int kernel, int stride) {
  ParamStore& p = net.params();
  x = net.add(std::make_unique<Conv2d>(p, conv, in, out, kernel, stride, kernel / 2), {x});
  return net.add(std::make_unique<BatchNorm>(p, bn, out), {x});
}

int basic_block(Net& net, int x, const std::string& name, int in, int out, int stride) {
  int h = conv_bn(net, x, name + ".conv1", name + ".bn1", in, out, 3, stride);
  h = net.add(std::make_unique<ReLU>(name + ".relu1", name + ".bn1"), {h});
  h = conv_bn(net, h, name + ".conv2", name + ".bn2", out, out, 3, 1);
  const bool project = stride != 1 || in != out;
  const int shortcut = project ? conv_bn(net, x, name + ".downsample.0", name + ".downsample.1",
                                         in, out, 1, stride)
                               : x;
  const int sum = net.add(std::make_unique<Add>(name + ".add"), {h, shortcut});
  return net.add(std::make_unique<ReLU>(name + ".relu2", name + ".bn2"), {sum});
}

}  // namespace

std::unique_ptr<Net> resnet_cifar(int depth, int classes, Device device, uint64_t seed) {
  PSGD_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "a CIFAR ResNet has depth 6n + 2 (20, 32, 44, ",
             "56, 110), got ", depth);
  const int blocks = (depth - 2) / 6;
  auto net = std::make_unique<Net>("resnet" + std::to_string(depth),
                                   Shape{3, kCifarSide, kCifarSide}, classes);
  int x = conv_bn(*net, Net::kInput, "conv1", "bn1", 3, 16, 3, 1);
  x = net->add(std::make_unique<ReLU>("relu", "bn1"), {x});
  int in = 16;
  for (int stage = 0; stage < 3; ++stage) {
    const int width = 16 << stage;
    for (int b = 0; b < blocks; ++b) {
      const std::string name = "layer" + std::to_string(stage + 1) + "." + std::to_string(b);
      x = basic_block(*net, x, name, in, width, stage > 0 && b == 0 ? 2 : 1);
      in = width;
    }
  }
  x = net->add(std::make_unique<Pool2d>("avgpool", PoolKind::Average, 8, 8), {x});
  net->add(std::make_unique<Linear>(net->params(), "fc", 64, classes), {x});
  net->finalize(device);
  init_pytorch_default(net->params(), seed);
  return net;
}

}  // namespace psgd
