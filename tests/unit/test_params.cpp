// ParamStore: the table, the flat buffers, and strict checkpoint loading.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

#include "engine/checkpoint.h"
#include "nets/nets.h"

using namespace psgd;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("psgd_test_" + name)).string();
}

}  // namespace

TEST_CASE("params: roles place values in flat buffers, in registration order") {
  ParamStore p;
  const int w = p.add("conv.weight", Shape{2, 1, 3, 3}, ParamRole::ConvWeight);
  const int g = p.add("bn.weight", Shape{2}, ParamRole::BnWeight);
  const int m = p.add("bn.running_mean", Shape{2}, ParamRole::BnRunningMean);
  const int n = p.add("bn.num_batches_tracked", Shape{}, ParamRole::BnBatchesTracked);
  CHECK_THROWS_WITH_AS(p.add("bn.weight", Shape{2}, ParamRole::BnWeight),
                       doctest::Contains("registered twice"), Error);
  CHECK_THROWS_WITH_AS(p.value(w), doctest::Contains("before allocation"), Error);
  p.allocate(Device::CPU);
  CHECK(p.trainable_count() == 20);
  CHECK(p.value(g).f32() == p.weights().f32() + 18);
  CHECK(p.grad(g).f32() == p.grads().f32() + 18);
  CHECK(p.value(m).f32() == p.buffers().f32());
  CHECK_THROWS_WITH_AS(p.grad(m), doctest::Contains("has no gradient"), Error);
  CHECK_THROWS_AS(p.value(n), Error);
  p.counter(n) = 7;
  CHECK(p.counter(n) == 7);
  CHECK(p.find("bn.running_mean") == m);
  CHECK(p.find("nothing") == -1);
  CHECK_THROWS_WITH_AS(p.add("late", Shape{1}, ParamRole::BnBias),
                       doctest::Contains("after allocation"), Error);
}

TEST_CASE("checkpoint: save and strict load round-trip every value and counter") {
  auto a = make_net("resnet20", 10, Device::CPU, 1), b = make_net("resnet20", 10, Device::CPU, 2);
  a->params().buffers().f32()[3] = 0.25f;
  a->params().counter(5) = 391;
  const std::string path = temp_path("roundtrip.safetensors");
  save_params(a->params(), path, {{"arch", "resnet20"}});
  load_params(b->params(), path);
  const Tensor wa = a->params().weights(), wb = b->params().weights();
  for (int64_t i = 0; i < wa.numel(); ++i) REQUIRE(wa.f32()[i] == wb.f32()[i]);
  CHECK(b->params().buffers().f32()[3] == 0.25f);
  CHECK(b->params().counter(5) == 391);
  CHECK(SafeTensorsFile::read(path).metadata().at("arch") == "resnet20");
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint: non-finite weights are never written nor loaded") {
  auto net = make_net("resnet20", 10, Device::CPU, 1),
       other = make_net("resnet20", 10, Device::CPU, 2);
  const std::string path = temp_path("finite.safetensors");
  save_params(net->params(), path);
  const int id = net->params().find("layer2.1.bn1.running_var");
  net->params().value(id).f32()[3] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(save_params(net->params(), path),
                       doctest::Contains("tensor 'layer2.1.bn1.running_var' holds inf"), Error);
  // A file written by someone else: the load refuses it before changing anything.
  const SafeTensorsFile good = SafeTensorsFile::read(path);
  SafeTensorsWriter poisoned;
  for (const StTensor& t : good.tensors()) {
    std::vector<std::byte> data(t.data, t.data + t.bytes);
    if (t.name == "conv1.weight") {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(data.data() + 8, &nan, sizeof nan);
    }
    poisoned.add(t.name, t.dtype, t.shape, data.data());
  }
  poisoned.write(path);
  const float before = other->params().weights().f32()[0];
  CHECK_THROWS_WITH_AS(load_params(other->params(), path),
                       doctest::Contains("tensor 'conv1.weight' holds nan"), Error);
  CHECK(other->params().weights().f32()[0] == before);
  // A double beyond float32's range would load as an infinity.
  SafeTensorsWriter too_large;
  for (const StTensor& t : good.tensors()) {
    if (t.name != "conv1.weight") {
      too_large.add(t.name, t.dtype, t.shape, t.data);
      continue;
    }
    std::vector<double> wide(static_cast<size_t>(t.numel()), 0.25);
    wide[5] = 1e39;
    too_large.add(t.name, StDType::F64, t.shape, wide.data());
  }
  too_large.write(path);
  CHECK_THROWS_WITH_AS(load_params(other->params(), path),
                       doctest::Contains("tensor 'conv1.weight' holds 1e+39"), Error);
  CHECK(other->params().weights().f32()[0] == before);
  std::filesystem::remove(path);
}

TEST_CASE("checkpoint: a different architecture or class count is refused untouched") {
  auto r20 = make_net("resnet20", 10, Device::CPU, 1);
  auto r32 = make_net("resnet32", 10, Device::CPU, 1);
  auto r20c100 = make_net("resnet20", 100, Device::CPU, 1);
  const std::string path = temp_path("arch.safetensors");
  save_params(r32->params(), path);
  const float before = r20->params().weights().f32()[0];
  CHECK_THROWS_WITH_AS(load_params(r20->params(), path),
                       doctest::Contains("unexpected tensor 'layer1.3.conv1.weight'"), Error);
  CHECK(r20->params().weights().f32()[0] == before);
  save_params(r20->params(), path);
  CHECK_THROWS_WITH_AS(load_params(r20c100->params(), path),
                       doctest::Contains("'fc.weight' has shape (10, 64)"), Error);
  CHECK_THROWS_WITH_AS(load_params(r32->params(), path),
                       doctest::Contains("missing tensor 'layer1.3.conv1.weight'"), Error);
  std::filesystem::remove(path);
}
