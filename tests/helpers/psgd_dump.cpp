// psgd-psgd-dump: a few PSGD training steps of a reference network, then low-precision
// evaluation, with everything tests/python/parity_psgd.py needs to redo them in PyTorch: the
// starting weights, each step's batch and ReLU decisions, the final weights, and the LP logits
// for weights at w_bits with float activations and with activations at a_bits (clipped range).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "engine/activation_quant.h"
#include "engine/checkpoint.h"
#include "engine/layers/elementwise.h"
#include "engine/optim.h"
#include "engine/weight_quant.h"
#include "nets/nets.h"
#include "nets/quant_config.h"
#include "tests/helpers/dump_support.h"

using namespace psgd;
using namespace psgd::test;

namespace {

struct Options {
  std::string arch = "resnet32";
  int classes = 100, batch = 16, steps = 3, w_bits = 4, a_bits = 4;
  float lr = 0.01f, momentum = 0.9f, weight_decay = 1e-4f, lambda_s = 150.0f, clip_n = 6.0f;
  bool first_last = true;
  uint64_t seed = 5;
  std::string weights_out, out;
};

// For every quantizing ReLU of the last forward: its integer levels and its step.
void add_activation_levels(SafeTensorsWriter& w, const Net& net, const std::string& prefix) {
  const std::vector<const Layer*> layers = net.layers();
  std::vector<uint8_t> levels;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto* relu = dynamic_cast<const ReLU*>(layers[i]);
    if (!relu || relu->activation_bits() == 0) continue;
    const Tensor& y = net.layer_output(i);
    const float delta = relu->activation_max() / static_cast<float>((1 << relu->activation_bits()) - 1);
    levels.resize(static_cast<size_t>(y.numel()));
    for (size_t j = 0; j < levels.size(); ++j)
      levels[j] = static_cast<uint8_t>(std::lround(y.f32()[j] / delta));
    w.add(prefix + "level." + relu->name(), StDType::U8, dims(y.shape), levels.data());
  }
}

int run(const Options& o) {
  Context ctx(Device::CPU, 0, o.seed);
  auto net = make_net(o.arch, o.classes, Device::CPU, o.seed);
  randomise_batch_norm(net->params(), o.seed);
  assign_quantizers(net->params(), {.w_bits = o.w_bits, .first_last = o.first_last});
  if (!o.weights_out.empty()) save_params(net->params(), o.weights_out);
  Optimizer optimizer(net->params(), {.kind = OptimizerKind::Sgd,
                                      .momentum = o.momentum,
                                      .weight_decay = o.weight_decay,
                                      .lambda_s = o.lambda_s});
  SafeTensorsWriter w;
  for (int step = 0; step < o.steps; ++step) {
    const Batch batch = synthetic_batch(*net, o.batch, o.seed, step);
    const std::string prefix = "step" + std::to_string(step) + ".";
    net->forward(ctx, batch.images_tensor(*net), Mode::Train);
    net->loss(ctx, batch.labels_tensor());
    net->backward(ctx);
    optimizer.step(ctx, o.lr);
    w.add(prefix + "images", StDType::F32, dims(batch.images_tensor(*net).shape),
          batch.images.data());
    w.add(prefix + "labels", StDType::I32, {o.batch}, batch.labels.data());
    add_relu_decisions(w, *net, prefix);
    std::printf("step %d: loss %.6f\n", step, net->loss_value());
  }
  SafeTensorsWriter final_weights;
  add_params(final_weights, net->params());
  final_weights.write(o.out + ".final");

  const Batch eval = synthetic_batch(*net, o.batch, o.seed, o.steps);
  const Tensor images = eval.images_tensor(*net);
  w.add("eval.images", StDType::F32, dims(images.shape), eval.images.data());
  {
    WeightsSnapshot keep(net->params());
    quantize_in_place(ctx, net->params());
    const Tensor& lp = net->forward(ctx, images, Mode::Eval);
    w.add("lp.logits", StDType::F32, dims(lp.shape), lp.data);
    add_relu_decisions(w, *net, "lp.");
    set_activation_quant(*net, {.bits = o.a_bits,
                                .range = ActivationRange::Clipped,
                                .clip_n = o.clip_n});
    const Tensor& lpa = net->forward(ctx, images, Mode::Eval);
    w.add("lpa.logits", StDType::F32, dims(lpa.shape), lpa.data);
    add_activation_levels(w, *net, "lpa.");
    set_activation_quant(*net, {});
  }
  w.set_metadata("config", "w_bits=" + std::to_string(o.w_bits) +
                               " a_bits=" + std::to_string(o.a_bits));
  w.write(o.out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Dump PSGD steps and LP evaluation for the PyTorch parity check"};
  app.add_option("--arch", o.arch, "network")->capture_default_str();
  app.add_option("--classes", o.classes, "number of classes")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size")->capture_default_str();
  app.add_option("--steps", o.steps, "PSGD steps")->capture_default_str();
  app.add_option("--w-bits", o.w_bits, "weight bits")->capture_default_str();
  app.add_option("--a-bits", o.a_bits, "activation bits of the LP evaluation")->capture_default_str();
  app.add_option("--lambda-s", o.lambda_s, "PSG strength")->capture_default_str();
  app.add_option("--lr", o.lr, "learning rate")->capture_default_str();
  app.add_option("--seed", o.seed, "initialisation and data seed")->capture_default_str();
  app.add_option("--weights-out", o.weights_out, "write the starting weights here")->required();
  app.add_option("--out", o.out, "output file; final weights go to <out>.final")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "psgd-psgd-dump: %s\n", e.what());
    return 1;
  }
}
