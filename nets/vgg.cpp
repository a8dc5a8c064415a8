// VGG16 with batch norm for CIFAR: configuration D of Simonyan and Zisserman, each conv followed
// by BN and ReLU, five 2x2 max pools down to (512, 1, 1), then a three-layer classifier with
// dropout. Names follow PyTorch's numbering of the `features` and `classifier` Sequentials.
#include <array>

#include "engine/layers/batch_norm.h"
#include "engine/layers/conv2d.h"
#include "engine/layers/elementwise.h"
#include "engine/layers/linear.h"
#include "engine/layers/pooling.h"
#include "nets/init.h"
#include "nets/nets.h"

namespace psgd {
namespace {

constexpr int kPool = 0;  // 'M' in the configuration
constexpr std::array kConfigD = {64,  64,  kPool, 128, 128, kPool, 256, 256, 256, kPool,
                                 512, 512, 512,   kPool, 512, 512, 512, kPool};
constexpr float kDropout = 0.5f;

}  // namespace

std::unique_ptr<Net> vgg16_bn(int classes, Device device, uint64_t seed) {
  auto net = std::make_unique<Net>("vgg16_bn", Shape{3, 32, 32}, classes);
  ParamStore& p = net->params();
  int x = Net::kInput, in = 3, index = 0;
  const auto features = [&](int i) { return "features." + std::to_string(i); };
  for (int width : kConfigD) {
    if (width == kPool) {
      x = net->add(std::make_unique<Pool2d>(features(index++), PoolKind::Max, 2, 2), {x});
      continue;
    }
    x = net->add(std::make_unique<Conv2d>(p, features(index++), in, width, 3, 1, 1), {x});
    const std::string bn = features(index++);
    x = net->add(std::make_unique<BatchNorm>(p, bn, width), {x});
    x = net->add(std::make_unique<ReLU>(features(index++), bn), {x});
    in = width;
  }
  // Each dropout draws from its own RNG stream, numbered by its position in the classifier.
  int position = 0;
  const auto next = [&] { return "classifier." + std::to_string(position++); };
  for (int hidden = 0; hidden < 2; ++hidden) {
    x = net->add(std::make_unique<Linear>(p, next(), hidden == 0 ? 512 : 4096, 4096), {x});
    x = net->add(std::make_unique<ReLU>(next()), {x});
    const uint32_t stream = position;
    x = net->add(std::make_unique<Dropout>(next(), kDropout, stream), {x});
  }
  net->add(std::make_unique<Linear>(p, next(), 4096, classes), {x});
  net->finalize(device);
  init_pytorch_default(net->params(), seed);
  return net;
}

}  // namespace psgd
