// psgd-bench: times a reference network on psgd with synthetic data already on the device, as
// the loader leaves it: the training step (forward, loss, backward and the fused PSGD update)
// and inference of the float (FP) and quantized (LP) network as evaluation runs it (forward,
// loss and top-k counts), each captured as a CUDA graph on a GPU. Prints one JSON object;
// tools/bench/compare.py runs it beside PyTorch.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/evaluator.h"
#include "engine/train_step.h"
#include "engine/weight_quant.h"
#include "tools/bench/bench_setup.h"

using namespace psgd;

namespace {

struct Options {
  bench::BenchOptions setup;
  int warmup = 3;
  int repeats = 20;
};

int run(const Options& o) {
  bench::BenchSetup b(o.setup);
  Context& ctx = b.ctx;
  Net& net = *b.net;
  TrainStep step(ctx, net, b.optimizer, single_rank());

  memory_reset_peak(b.device);
  const double train =
      bench::median_ms(ctx, o.warmup, o.repeats, [&] { step.run(b.images, b.labels, 0.01f); });
  const size_t peak = memory_peak(b.device);
  Evaluator evaluator(ctx, net);
  const double infer_fp =
      bench::median_ms(ctx, o.warmup, o.repeats, [&] { evaluator.run_batch(b.images, b.labels); });
  double infer_lp = 0.0;
  {
    WeightsSnapshot keep(net.params());
    quantize_in_place(ctx, net.params());
    infer_lp = bench::median_ms(ctx, o.warmup, o.repeats,
                                [&] { evaluator.run_batch(b.images, b.labels); });
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const int64_t batch = o.setup.batch;
  const auto per_s = [&](double ms) { return 1000.0 * static_cast<double>(batch) / ms; };
  // The tensors with quantizers (and so with the PSG scale), by their PyTorch names: compare.py
  // checks that its optimizer scales and its LP network quantizes the same ones.
  std::vector<std::string> quantized;
  for (const ParamEntry& e : net.params().entries())
    if (e.quant.quantized()) quantized.push_back(e.name);
  const nlohmann::json result = {
      {"arch", o.setup.arch},
      {"batch", batch},
      {"device", o.setup.device},
      {"threads", ctx.threads()},
      {"math", numerics_name(ctx)},
      {"train_ms", train},
      {"train_images_per_s", per_s(train)},
      {"infer_fp_images_per_s", per_s(infer_fp)},
      {"infer_lp_images_per_s", per_s(infer_lp)},
      {"peak_device_mib", b.device == Device::CUDA ? peak / 1048576.0 : 0.0},
      {"max_rss_mib", usage.ru_maxrss / 1024.0},
      {"graph_replays", step.replays()},
      {"eval_graph_replays", evaluator.replays()},
      {"quantized_tensors", quantized}};
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Time psgd's training step and FP/LP inference on synthetic data (one JSON line)"};
  bench::add_bench_options(app, o.setup);
  app.add_option("--warmup", o.warmup, "untimed runs first")
      ->check(tools::non_negative())
      ->capture_default_str();
  app.add_option("--repeats", o.repeats, "timed runs")
      ->check(tools::positive())
      ->capture_default_str();
  tools::one_line_errors(app, "psgd-bench");
  CLI11_PARSE(app, argc, argv);
  return tools::run_tool("psgd-bench", [&] { return run(o); });
}
