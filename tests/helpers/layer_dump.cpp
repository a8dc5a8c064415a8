// psgd-layer-dump: runs every layer type once, forward in training mode and backward, on awkward
// shapes, and writes inputs, parameters, outputs and gradients to one safetensors file, with a
// JSON description of each case in the metadata. tests/python/parity_layers.py recomputes each
// case with torch.nn.functional and compares.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/layers/batch_norm.h"
#include "engine/layers/conv2d.h"
#include "engine/layers/elementwise.h"
#include "engine/layers/linear.h"
#include "engine/layers/pooling.h"
#include "engine/safetensors.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;
using json = nlohmann::json;

namespace {

struct Case {
  json spec;
  std::vector<Shape> inputs;
  ParamStore params;  // before `layer`, which refers to it
  std::unique_ptr<Layer> layer;
};

std::vector<int64_t> dims(const Shape& s) {
  std::vector<int64_t> d;
  for (int i = 0; i < s.rank(); ++i) d.push_back(s[i]);
  return d;
}

std::vector<std::unique_ptr<Case>> make_cases() {
  std::vector<std::unique_ptr<Case>> cases;
  const auto add = [&](json spec, std::vector<Shape> inputs) -> Case& {
    auto c = std::make_unique<Case>();
    c->spec = std::move(spec);
    c->inputs = std::move(inputs);
    cases.push_back(std::move(c));
    return *cases.back();
  };
  struct Conv {
    Shape x;
    int out, kernel, stride, pad;
  };
  for (const Conv& v : {Conv{{3, 3, 7, 9}, 5, 3, 1, 1}, Conv{{1, 4, 7, 7}, 3, 3, 2, 1},
                        Conv{{3, 2, 5, 6}, 4, 1, 2, 0}, Conv{{2, 3, 8, 5}, 2, 5, 2, 2},
                        Conv{{3, 2, 6, 7}, 3, 2, 1, 0}, Conv{{2, 5, 17, 13}, 6, 3, 3, 0}}) {
    Case& c = add({{"kind", "conv2d"}, {"stride", v.stride}, {"pad", v.pad}}, {v.x});
    c.layer = std::make_unique<Conv2d>(c.params, "conv", static_cast<int>(v.x[1]), v.out,
                                       v.kernel, v.stride, v.pad);
  }
  for (const Shape& x : {Shape{3, 5, 3, 7}, Shape{1, 3, 5, 5}, Shape{6, 4}}) {
    Case& c = add({{"kind", "batch_norm"}}, {x});
    c.layer = std::make_unique<BatchNorm>(c.params, "bn", static_cast<int>(x[1]));
  }
  add({{"kind", "relu"}}, {{3, 4, 5, 7}}).layer = std::make_unique<ReLU>("relu");
  add({{"kind", "add"}}, {{3, 2, 5, 3}, {3, 2, 5, 3}}).layer = std::make_unique<Add>("add");
  struct Pool {
    PoolKind kind;
    Shape x;
    int kernel, stride;
  };
  for (const Pool& v : {Pool{PoolKind::Average, {2, 3, 8, 8}, 8, 8},
                        Pool{PoolKind::Average, {3, 2, 7, 7}, 3, 2},
                        Pool{PoolKind::Average, {3, 1, 7, 5}, 2, 2},
                        Pool{PoolKind::Max, {3, 2, 6, 8}, 2, 2},
                        Pool{PoolKind::Max, {1, 3, 7, 5}, 2, 2},
                        Pool{PoolKind::Max, {2, 2, 9, 9}, 3, 2}}) {
    Case& c = add({{"kind", v.kind == PoolKind::Max ? "max_pool" : "avg_pool"},
                   {"kernel", v.kernel},
                   {"stride", v.stride}},
                  {v.x});
    c.layer = std::make_unique<Pool2d>("pool", v.kind, v.kernel, v.stride);
  }
  struct Fc {
    Shape x;
    int in, out;
  };
  for (const Fc& v : {Fc{{3, 7}, 7, 5}, Fc{{3, 2, 3, 3}, 18, 4}, Fc{{1, 6}, 6, 3}}) {
    Case& c = add({{"kind", "linear"}}, {v.x});
    c.layer = std::make_unique<Linear>(c.params, "fc", v.in, v.out);
  }
  Case& drop = add({{"kind", "dropout"}, {"p", 0.3}, {"stream", (7ull << 32)}}, {{3, 4, 5, 6}});
  drop.layer = std::make_unique<Dropout>("drop", 0.3f, 7);
  return cases;
}

void fill_parameters(ParamStore& params, uint64_t stream) {
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) == ParamStorage::Counter) continue;
    const bool positive = e.role == ParamRole::BnWeight || e.role == ParamRole::BnRunningVar;
    fill_uniform(params.value(id), positive ? 0.5f : -1.0f, positive ? 1.5f : 1.0f, 5,
                 stream * 100 + id);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: psgd-layer-dump OUT.safetensors\n");
    return 2;
  }
  try {
    constexpr uint64_t kSeed = 11;
    Context ctx(Device::CPU, 0, kSeed);
    SafeTensorsWriter w;
    json specs = json::array();
    std::vector<std::unique_ptr<Case>> cases = make_cases();
    for (size_t i = 0; i < cases.size(); ++i) {
      Case& c = *cases[i];
      const std::string prefix = "case" + std::to_string(i) + ".";
      c.params.allocate(Device::CPU);
      fill_parameters(c.params, i);
      for (const ParamEntry& e : c.params.entries())
        if (storage_of(e.role) != ParamStorage::Counter)
          w.add(prefix + "param." + e.name, StDType::F32, dims(e.shape),
                c.params.value(c.params.find(e.name)).data);

      std::vector<std::unique_ptr<HostTensor>> store;
      std::vector<Tensor> x, dx;
      std::vector<ops::GradMode> modes(c.inputs.size(), ops::GradMode::Overwrite);
      for (size_t k = 0; k < c.inputs.size(); ++k) {
        x.push_back(store.emplace_back(std::make_unique<HostTensor>(c.inputs[k]))->t());
        fill_uniform(x.back(), -1.0f, 1.0f, kSeed, i * 10 + k);
        dx.push_back(store.emplace_back(std::make_unique<HostTensor>(c.inputs[k]))->t());
        w.add(prefix + "x" + std::to_string(k), StDType::F32, dims(c.inputs[k]), x.back().data);
      }
      const Shape out = c.layer->output_shape(c.inputs);
      HostTensor y(out), dy(out);
      fill_uniform(dy.t(), -1.0f, 1.0f, kSeed, i * 10 + 9);
      c.layer->plan(Device::CPU, c.inputs);
      ctx.reserve_workspace(c.layer->workspace_floats(ctx, c.inputs));
      c.layer->forward(ctx, x, y.t(), Mode::Train);
      c.layer->backward(ctx, x, y.t(), dy.t(), dx, modes);

      w.add(prefix + "y", StDType::F32, dims(out), y.data());
      w.add(prefix + "dy", StDType::F32, dims(out), dy.data());
      for (size_t k = 0; k < dx.size(); ++k)
        w.add(prefix + "dx" + std::to_string(k), StDType::F32, dims(c.inputs[k]), dx[k].data);
      for (const ParamEntry& e : c.params.entries()) {
        const int id = c.params.find(e.name);
        if (storage_of(e.role) == ParamStorage::Trainable)
          w.add(prefix + "grad." + e.name, StDType::F32, dims(e.shape), c.params.grad(id).data);
        else if (storage_of(e.role) == ParamStorage::Buffer)
          w.add(prefix + "state." + e.name, StDType::F32, dims(e.shape), c.params.value(id).data);
      }
      json spec = c.spec;
      spec["describe"] = c.layer->describe();
      specs.push_back(spec);
    }
    w.set_metadata("cases", specs.dump());
    w.set_metadata("seed", std::to_string(kSeed));
    w.write(argv[1]);
    std::printf("psgd-layer-dump: %zu cases -> %s\n", cases.size(), argv[1]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "psgd-layer-dump: %s\n", e.what());
    return 1;
  }
}
