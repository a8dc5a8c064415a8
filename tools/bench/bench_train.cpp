// psgd-bench: times a reference network on psgd with synthetic data already on the device, as
// the loader leaves it: the training step (forward, loss, backward and the fused PSGD update)
// and inference of the float (FP) and quantized (LP) network as evaluation runs it (forward,
// loss and top-k counts), each captured as a CUDA graph on a GPU. Prints one JSON object;
// tools/bench/compare.py runs it beside PyTorch.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "engine/evaluator.h"
#include "engine/optim.h"
#include "engine/train_step.h"
#include "engine/weight_quant.h"
#include "kernels/rng.h"
#include "nets/nets.h"
#include "nets/quant_config.h"

using namespace psgd;

namespace {

struct Options {
  std::string arch = "resnet32";
  int classes = 100;
  int64_t batch = 128;
  std::string device = "cpu";
  int threads = 0;
  int warmup = 3;
  int repeats = 20;
  bool strict_fp32 = false;
  bool bf16 = false;
  int w_bits = 4;
  float lambda_s = 150.0f;
};

// Median milliseconds of `repeats` calls of `work` after `warmup` untimed ones; the device is
// drained before each clock reading.
double median_ms(Context& ctx, int warmup, int repeats, const std::function<void()>& work) {
  std::vector<double> ms;
  for (int i = 0; i < warmup + repeats; ++i) {
    ctx.synchronize();
    const auto start = std::chrono::steady_clock::now();
    work();
    ctx.synchronize();
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    if (i >= warmup) ms.push_back(took.count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

int run(const Options& o) {
  const Device device = o.device == "cuda" ? Device::CUDA : Device::CPU;
  PSGD_CHECK(device == Device::CPU || cuda_available(), "--device cuda: no GPU is visible");
  PSGD_CHECK(!(o.bf16 && o.strict_fp32), "--bf16 and --strict-fp32 exclude each other");
  Context ctx(device, o.threads, 1, {.tf32 = !o.strict_fp32, .bf16 = o.bf16});
  auto net = make_net(o.arch, o.classes, device, 1);
  assign_quantizers(net->params(), {.w_bits = o.w_bits, .first_last = true, .psg = o.lambda_s > 0});
  Optimizer optimizer(net->params(),
                      {.momentum = 0.9f, .weight_decay = 1e-4f, .lambda_s = o.lambda_s});
  TrainStep step(ctx, *net, optimizer, single_rank());

  const Shape& s = net->sample_shape();
  std::vector<float> images(static_cast<size_t>(o.batch * s.numel()));
  std::vector<int32_t> labels(static_cast<size_t>(o.batch));
  const uint64_t key = rng::stream_key(1, 0);
  for (size_t i = 0; i < images.size(); ++i) images[i] = 2.0f * rng::uniform(key, i) - 1.0f;
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % o.classes);
  DeviceBuffer x_buffer(device, images.size() * sizeof(float)),
      y_buffer(device, labels.size() * sizeof(int32_t));
  memory_copy(x_buffer.data(), device, images.data(), Device::CPU, images.size() * sizeof(float));
  memory_copy(y_buffer.data(), device, labels.data(), Device::CPU, labels.size() * sizeof(int32_t));
  const Tensor x = x_buffer.f32(0, Shape{o.batch, s[0], s[1], s[2]});
  const Tensor y(reinterpret_cast<int32_t*>(y_buffer.data()), Shape{o.batch}, device);

  memory_reset_peak(device);
  const double train = median_ms(ctx, o.warmup, o.repeats, [&] { step.run(x, y, 0.01f); });
  const size_t peak = memory_peak(device);
  Evaluator evaluator(ctx, *net);
  const double infer_fp =
      median_ms(ctx, o.warmup, o.repeats, [&] { evaluator.run_batch(x, y); });
  double infer_lp = 0.0;
  {
    WeightsSnapshot keep(net->params());
    quantize_in_place(ctx, net->params());
    infer_lp = median_ms(ctx, o.warmup, o.repeats, [&] { evaluator.run_batch(x, y); });
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto per_s = [&](double ms) { return 1000.0 * static_cast<double>(o.batch) / ms; };
  std::printf(
      "{\"arch\": \"%s\", \"batch\": %ld, \"device\": \"%s\", \"threads\": %d, \"math\": \"%s\", "
      "\"train_ms\": %.4f, \"train_images_per_s\": %.1f, \"infer_fp_images_per_s\": %.1f, "
      "\"infer_lp_images_per_s\": %.1f, \"peak_device_mib\": %.1f, \"max_rss_mib\": %.1f, "
      "\"graph_replays\": %ld, \"eval_graph_replays\": %ld}\n",
      o.arch.c_str(), static_cast<long>(o.batch), o.device.c_str(), ctx.threads(),
      numerics_name(ctx), train, per_s(train), per_s(infer_fp), per_s(infer_lp),
      device == Device::CUDA ? peak / 1048576.0 : 0.0, usage.ru_maxrss / 1024.0,
      static_cast<long>(step.replays()), static_cast<long>(evaluator.replays()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Time psgd's training step and FP/LP inference on synthetic data (one JSON line)"};
  app.add_option("--arch", o.arch, "network")->capture_default_str();
  app.add_option("--classes", o.classes, "number of classes")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed runs first")->capture_default_str();
  app.add_option("--repeats", o.repeats, "timed runs")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--strict-fp32", o.strict_fp32, "GPU: no TF32");
  app.add_flag("--bf16", o.bf16, "bf16 activations (float32 weights and optimizer)");
  app.add_option("--w-bits", o.w_bits, "weight bits of the quantizers")->capture_default_str();
  app.add_option("--lambda-s", o.lambda_s, "PSG strength")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "psgd-bench: %s\n", user_message(e).c_str());
    return 1;
  }
}
