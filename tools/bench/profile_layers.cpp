// psgd-profile: where a training step's time goes. Each layer's forward and backward is timed
// alone, repeated on the tensors a step gives it there (on a GPU the repeats are captured as one
// CUDA graph and replayed, so that launch costs drop out and what remains is the GPU's time);
// so are the loss with the accuracy counts and the optimizer update. Beside them, the whole
// captured step: the difference is what a step spends between kernels. And each layer as a step
// run op by op meets it, its inputs where the layers before left them: repeated alone, a layer
// finds its inputs in cache, which a memory-bound layer in a step on the CPU does not. Prints a
// table by layer and summaries by kind of layer. Layers that accumulate or work in place change
// the tensors as they repeat, and gradient buffers are shared between layers, so each layer's
// timing starts from a step run op by op up to it: stale values can be denormal, which the CPU
// computes on up to 100 times slower.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/captured_graph.h"
#include "engine/metric_sums.h"
#include "engine/train_step.h"
#include "tools/bench/bench_setup.h"

using namespace psgd;

namespace {

struct Options {
  bench::BenchOptions setup;
  int repeats = 10;  // runs of the work per timing
  int rounds = 3;    // timings, of which the median counts
  bool profiler_range = false;
};

// Microseconds per run of `work`: the median over `rounds` timings of `repeats` runs, after one
// untimed round. On a GPU the repeats of Captured work are one captured graph.
enum class Launch : bool { AsIs, Captured };
double microseconds(Context& ctx, const Options& o, Launch launch,
                    const std::function<void()>& work) {
  std::function<void()> round = [&] {
    for (int r = 0; r < o.repeats; ++r) work();
  };
  CapturedGraph graph;
  if (ctx.device() == Device::CUDA && launch == Launch::Captured) {
    graph = CapturedGraph::capture(ctx, round);
    round = [&] { graph.replay(ctx); };
  }
  return 1000.0 * bench::median_ms(ctx, 1, o.rounds, round) / o.repeats;
}

// "conv2d" of "layer1.0.conv1: conv2d 16->16 3x3 stride 1 pad 1".
std::string kind_of(const std::string& description) {
  const size_t start = description.find(": ") + 2;
  return description.substr(start, description.find_first_of(" ,", start) - start);
}

struct Row {
  std::string what, shape;
  double forward_us = 0.0, backward_us = 0.0;
  double step_forward_us = 0.0, step_backward_us = 0.0;  // in a step run op by op
};

// Per layer, the median microseconds of its forward and of its backward in `rounds` steps run
// op by op (after one untimed), the device drained after each layer (on a GPU the figures then
// include each layer's launches).
struct InStep {
  std::vector<double> forward_us, backward_us;
};
InStep time_in_step(Context& ctx, const Options& o, Net& net, const bench::BenchSetup& b) {
  const size_t count = net.layers().size();
  std::vector<std::vector<double>> forward(count), backward(count);
  for (int round = 0; round <= o.rounds; ++round) {
    net.forward(ctx, b.images, Mode::Train);  // which layers compute their successors
    ctx.synchronize();
    auto last = std::chrono::steady_clock::now();
    const auto lap = [&](std::vector<double>& into) {
      ctx.synchronize();
      const auto now = std::chrono::steady_clock::now();
      if (round > 0) into.push_back(std::chrono::duration<double, std::micro>(now - last).count());
      last = now;
    };
    for (size_t k = 0; k < count; ++k) {
      if (net.computed_by(k) < 0) net.forward_layer(ctx, k, Mode::Train);
      lap(forward[k]);
    }
    net.loss(ctx, b.labels);
    std::vector<double> loss_us;
    lap(loss_us);
    for (size_t j = count; j-- > 0;) {
      net.backward_layer(ctx, j);
      lap(backward[j]);
    }
  }
  InStep t;
  for (size_t k = 0; k < count; ++k) {
    t.forward_us.push_back(bench::median(forward[k]));
    t.backward_us.push_back(bench::median(backward[k]));
  }
  return t;
}

int run(const Options& o) {
  bench::BenchSetup b(o.setup);
  Context& ctx = b.ctx;
  Net& net = *b.net;
  const float lr = 0.01f;
  TrainStep step(ctx, net, b.optimizer, single_rank());
  for (int i = 0; i < 3; ++i) step.run(b.images, b.labels, lr);  // settled, and captured
  // As training runs it: the step writes its learning rate, then replays its own graph.
  const double step_us =
      microseconds(ctx, o, Launch::AsIs, [&] { step.run(b.images, b.labels, lr); });

  const InStep in_step = time_in_step(ctx, o, net, b);

  // The tensors layer k sees in a step: a forward, then the loss and the backward of the layers
  // after k.
  const size_t count = net.layers().size();
  const auto step_until = [&](size_t k) {
    net.forward(ctx, b.images, Mode::Train);
    net.loss(ctx, b.labels);
    for (size_t j = count; j-- > k + 1;) net.backward_layer(ctx, j);
  };
  step_until(count);
  const std::vector<const Layer*> layers = std::as_const(net).layers();
  std::vector<Row> rows;
  std::map<std::string, double> by_kind, by_kind_in_step;
  for (size_t k = 0; k < count; ++k) {
    if (net.computed_by(k) >= 0) continue;  // its work is in the row of the layer that did it
    Row r{layers[k]->describe(), net.layer_output(k).shape.str()};
    // The ReLU, or the join and its ReLU, that layer k computes after it; in backward the join
    // still routes the gradient to its residual, just before layer k's own backward.
    size_t last = k;
    while (last + 1 < count && net.computed_by(last + 1) == static_cast<int>(k))
      r.what += " + " + kind_of(layers[++last]->describe());
    step_until(last);
    r.backward_us = microseconds(ctx, o, Launch::Captured, [&] {
      for (size_t j = last + 1; j-- > k;) net.backward_layer(ctx, j);
    });
    step_until(last);
    r.forward_us =
        microseconds(ctx, o, Launch::Captured, [&] { net.forward_layer(ctx, k, Mode::Train); });
    r.step_forward_us = in_step.forward_us[k];
    for (size_t j = k; j <= last; ++j) r.step_backward_us += in_step.backward_us[j];
    by_kind[kind_of(r.what)] += r.forward_us + r.backward_us;
    by_kind_in_step[kind_of(r.what)] += r.step_forward_us + r.step_backward_us;
    rows.push_back(r);
  }
  step_until(0);
  MetricSums sums(ctx.device());
  Row loss{"loss, its gradient and the accuracy counts", net.logits().shape.str()};
  loss.forward_us = microseconds(ctx, o, Launch::Captured, [&] {
    ops::accumulate_metrics(ctx, net.logits(), b.labels, net.loss(ctx, b.labels), sums.sums());
  });
  by_kind["loss"] += loss.forward_us;
  rows.push_back(loss);
  // Repeating apply() after one prepare() suits BenchSetup's SGD, which counts nothing on the
  // device (Adam's step count would run ahead of the host's).
  b.optimizer.prepare(ctx, lr);
  Row update{"optimizer: ranges, Q(w), PSG scale, momentum, update", ""};
  update.forward_us = microseconds(ctx, o, Launch::Captured, [&] { b.optimizer.apply(ctx); });
  by_kind["optimizer"] += update.forward_us;
  rows.push_back(update);
  if (o.profiler_range) {
    ctx.profiler_recording(true);
    step_until(0);
    net.backward_layer(ctx, 0);
    b.optimizer.prepare(ctx, lr);
    b.optimizer.apply(ctx);
    ctx.profiler_recording(false);
  }

  double parts = 0.0, parts_in_step = 0.0;
  for (const Row& r : rows) {
    parts += r.forward_us + r.backward_us;
    parts_in_step += r.step_forward_us + r.step_backward_us;
  }
  std::printf(
      "psgd-profile: %s, batch %ld, %s (%s), %d threads; each figure the median of %d "
      "rounds of %d runs%s\n\n",
      o.setup.arch.c_str(), static_cast<long>(o.setup.batch),
      ctx.device() == Device::CUDA ? "GPU" : "CPU", numerics_name(ctx), ctx.threads(), o.rounds,
      o.repeats, ctx.device() == Device::CUDA ? ", each round one graph" : "");
  std::printf("%-62s %-18s %11s %11s %7s %11s %11s\n", "layer (+ what it computes after it)",
              "output", "forward us", "backward us", "share", "in step fw", "in step bw");
  for (const Row& r : rows)
    std::printf("%-62.62s %-18s %11.1f %11.1f %6.1f%% %11.1f %11.1f\n", r.what.c_str(),
                r.shape.c_str(), r.forward_us, r.backward_us,
                100.0 * (r.forward_us + r.backward_us) / parts, r.step_forward_us,
                r.step_backward_us);
  std::printf("\n%-81s %11.1f us\n", "sum of the parts", parts);
  std::printf("%-81s %11.1f us\n", "sum of the layers in a step run op by op (\"in step\")",
              parts_in_step);
  std::printf("%-81s %11.1f us (%.0f images/s)\n", "the whole step, as training runs it", step_us,
              1e6 * static_cast<double>(o.setup.batch) / step_us);
  std::printf("\nby kind:");
  for (const auto& [kind, us] : by_kind)
    std::printf("  %s %.1f%%", kind.c_str(), 100.0 * us / parts);
  std::printf("\nin step:");
  for (const auto& [kind, us] : by_kind_in_step)
    std::printf("  %s %.1f%%", kind.c_str(), 100.0 * us / parts_in_step);
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Time each layer of a psgd training step alone, beside the whole step"};
  bench::add_bench_options(app, o.setup);
  app.add_option("--repeats", o.repeats, "runs per timing")
      ->check(tools::positive())
      ->capture_default_str();
  app.add_option("--rounds", o.rounds, "timings per figure (the median counts)")
      ->check(tools::positive())
      ->capture_default_str();
  app.add_flag("--profiler-range", o.profiler_range,
               "GPU: at the end, one step op by op inside cudaProfilerStart/Stop, the kernels "
               "that `ncu --profile-from-start off` then records");
  tools::one_line_errors(app, "psgd-profile");
  CLI11_PARSE(app, argc, argv);
  return tools::run_tool("psgd-profile", [&] { return run(o); });
}
