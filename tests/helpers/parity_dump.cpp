// psgd-parity-dump: runs one forward (and in training mode one backward) of a reference network
// and writes everything a PyTorch re-implementation needs to check it: the starting weights (a
// state_dict PyTorch loads strictly), the batch, the logits, the loss, every parameter
// gradient, the BN state after the step, the dropout streams used and each ReLU's decisions.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/layers/elementwise.h"
#include "nets/nets.h"
#include "tests/helpers/dump_support.h"

using namespace psgd;
using namespace psgd::test;

namespace {

struct Options {
  std::string arch = "resnet32";
  int classes = 100;
  int batch = 16;
  uint64_t seed = 1;
  std::string weights_in, weights_out, inputs, out;
  std::string mode = "train";
  int threads = 0;
};

int run(const Options& o) {
  Context ctx(Device::CPU, o.threads, o.seed);
  auto net = make_net(o.arch, o.classes, Device::CPU, o.seed);
  if (!o.weights_in.empty())
    load_params(net->params(), o.weights_in);
  else
    randomise_batch_norm(net->params(), o.seed);
  if (!o.weights_out.empty()) save_params(net->params(), o.weights_out, {{"arch", o.arch}});

  const Batch batch = o.inputs.empty() ? synthetic_batch(*net, o.batch, o.seed, 0)
                                        : batch_from_file(o.inputs);
  const Tensor images = batch.images_tensor(*net), labels = batch.labels_tensor();
  const int64_t n = labels.numel();
  const bool train = o.mode == "train";
  const Tensor& logits = net->forward(ctx, images, train ? Mode::Train : Mode::Eval);
  net->loss(ctx, labels);
  if (train) net->backward(ctx);

  SafeTensorsWriter w;
  w.add("images", StDType::F32, dims(images.shape), images.data);
  w.add("labels", StDType::I32, {n}, labels.data);
  w.add("logits", StDType::F32, dims(logits.shape), logits.data);
  const float loss = net->loss_value();
  w.add("loss", StDType::F32, {}, &loss);
  const ParamStore& p = net->params();
  for (int id = 0; train && id < static_cast<int>(p.entries().size()); ++id) {
    const ParamEntry& e = p.entry(id);
    if (storage_of(e.role) == ParamStorage::Trainable)
      w.add("grad." + e.name, StDType::F32, dims(e.shape), p.grad(id).data);
    else if (storage_of(e.role) == ParamStorage::Buffer)
      w.add("state." + e.name, StDType::F32, dims(e.shape), p.value(id).data);
    else {
      const int64_t count = p.counter(id);
      w.add("state." + e.name, StDType::I64, {}, &count);
    }
  }
  // Which ReLUs let their input through: PyTorch follows the same decisions, so that inputs
  // within rounding of zero cannot flip a branch and make float32 rounding look like a bug.
  add_relu_decisions(w, *net, "");
  nlohmann::json dropout = nlohmann::json::array();
  for (const Layer* layer : std::as_const(*net).layers())
    if (const auto* d = dynamic_cast<const Dropout*>(layer); d && d->forwards() > 0)
      dropout.push_back({{"stream", d->stream()}, {"forward_index", d->forwards() - 1}});
  w.set_metadata("seed", std::to_string(o.seed));
  w.set_metadata("dropout", dropout.dump());
  w.set_metadata("mode", o.mode);
  w.write(o.out);
  std::printf("%s: %s, batch %lld, loss %.6f -> %s\n", o.arch.c_str(), o.mode.c_str(),
              static_cast<long long>(n), loss, o.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Dump one step of a psgd network for the PyTorch parity checks"};
  app.add_option("--arch", o.arch, "network")->capture_default_str();
  app.add_option("--classes", o.classes, "number of classes")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size of the generated batch")->capture_default_str();
  app.add_option("--seed", o.seed, "initialisation, data and dropout seed")->capture_default_str();
  app.add_option("--weights-in", o.weights_in, "start from these weights (safetensors)");
  app.add_option("--weights-out", o.weights_out, "write the starting weights here");
  app.add_option("--inputs", o.inputs, "take 'images' and 'labels' from this safetensors file");
  app.add_option("--mode", o.mode, "train or eval")
      ->check(CLI::IsMember({"train", "eval"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: all)")->capture_default_str();
  app.add_option("--out", o.out, "output safetensors file")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "psgd-parity-dump: %s\n", e.what());
    return 1;
  }
}
