// psgd-bench-step: times training steps (forward, loss, backward) of a reference network on the
// CPU backend with synthetic data, and prints the median. tools/bench/cpu_step.py runs it beside
// PyTorch with the same threads and prints the ratio.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "kernels/rng.h"
#include "nets/nets.h"

using namespace psgd;

namespace {

struct Options {
  std::string arch = "resnet32";
  int classes = 100;
  int batch = 128;
  int threads = 0;
  int warmup = 2;
  int repeats = 10;
  bool json = false;
};

int run(const Options& o) {
  Context ctx(Device::CPU, o.threads, 1);
  auto net = make_net(o.arch, o.classes, Device::CPU, 1);
  const Shape& s = net->sample_shape();
  std::vector<float> images(static_cast<size_t>(o.batch * s.numel()));
  std::vector<int32_t> labels(static_cast<size_t>(o.batch));
  const uint64_t key = rng::stream_key(1, 0);
  for (size_t i = 0; i < images.size(); ++i) images[i] = 2.0f * rng::uniform(key, i) - 1.0f;
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % o.classes);
  const Tensor x(images.data(), Shape{o.batch, s[0], s[1], s[2]}, Device::CPU);
  const Tensor y(labels.data(), Shape{o.batch}, Device::CPU);

  std::vector<double> ms;
  for (int i = 0; i < o.warmup + o.repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    net->forward(ctx, x, Mode::Train);
    net->loss(ctx, y);
    net->backward(ctx);
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    if (i >= o.warmup) ms.push_back(took.count());
    if (!o.json)
      std::fprintf(stderr, "\r%s step %d/%d: %.1f ms", o.arch.c_str(), i + 1,
                   o.warmup + o.repeats, took.count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  if (o.json) {
    std::printf("{\"arch\": \"%s\", \"batch\": %d, \"threads\": %d, \"median_ms\": %.3f, "
                "\"min_ms\": %.3f, \"images_per_s\": %.1f}\n",
                o.arch.c_str(), o.batch, ctx.threads(), median, ms.front(),
                1000.0 * o.batch / median);
  } else {
    std::fprintf(stderr, "\n");
    std::printf("%s batch %d, %d threads: median %.1f ms per step, %.0f images/s\n",
                o.arch.c_str(), o.batch, ctx.threads(), median, 1000.0 * o.batch / median);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Time training steps (forward, loss, backward) of psgd's CPU backend"};
  app.add_option("--arch", o.arch, "network")->capture_default_str();
  app.add_option("--classes", o.classes, "number of classes")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed steps first")->capture_default_str();
  app.add_option("--repeats", o.repeats, "timed steps")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_flag("--json", o.json, "print one JSON line");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "psgd-bench-step: %s\n", e.what());
    return 1;
  }
}
