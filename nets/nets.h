// The reference networks as declarative builders, with the reference's state_dict names and
// PyTorch's default initialisation. CIFAR inputs: (3, 32, 32).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/net.h"

namespace psgd {

// ResNet-20/32/44/56/110 for CIFAR: depth = 6n + 2.
std::unique_ptr<Net> resnet_cifar(int depth, int classes, Device device, uint64_t seed);
// VGG16 with batch norm (configuration D), classifier 512 -> 4096 -> 4096 -> classes.
std::unique_ptr<Net> vgg16_bn(int classes, Device device, uint64_t seed);

// By name: resnet20, resnet32, resnet44, resnet56, resnet110, vgg16_bn.
std::unique_ptr<Net> make_net(const std::string& arch, int classes, Device device, uint64_t seed);
const std::vector<std::string>& net_names();

}  // namespace psgd
