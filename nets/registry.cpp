// Builds a network by its command-line name.
#include <sstream>

#include "nets/nets.h"

namespace psgd {

const std::vector<std::string>& net_names() {
  static const std::vector<std::string> names = {"resnet20", "resnet32",  "resnet44",
                                                 "resnet56", "resnet110", "vgg16_bn"};
  return names;
}

std::unique_ptr<Net> make_net(const std::string& arch, int classes, Device device, uint64_t seed) {
  if (arch == "vgg16_bn") return vgg16_bn(classes, device, seed);
  for (const std::string& name : net_names())
    if (name == arch) return resnet_cifar(std::stoi(arch.substr(6)), classes, device, seed);
  std::ostringstream known;
  for (const std::string& name : net_names()) known << " " << name;
  PSGD_FAIL("unknown architecture '", arch, "'; choose one of:", known.str());
}

}  // namespace psgd
