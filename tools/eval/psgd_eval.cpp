// psgd-eval: evaluates a checkpoint on a test set as the reference does, in full precision (FP)
// and low precision (LP: weights on their grid, optionally quantized activations), and beyond
// the reference: a sweep of bit widths, magnitude pruning, and the per-layer report.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/dataset.h"
#include "data/loader.h"
#include "engine/activation_quant.h"
#include "engine/evaluator.h"
#include "engine/pruning.h"
#include "engine/quant_report.h"
#include "engine/safetensors.h"
#include "engine/train_state.h"
#include "engine/weight_quant.h"
#include "kernels/quant_math.h"
#include "nets/nets.h"
#include "nets/quant_config.h"
#include "tools/cli_support.h"

using namespace psgd;

namespace {

struct EvalOptions {
  std::string model, data, dataset = "auto", arch;
  int w_bits = 0, a_bits = 32;  // w_bits 0: from the checkpoint
  bool first_last = false, act_quant = false, act_clipping = false, coarse = false;
  float clipping_range = 6.0f, lambda_s = 0.0f;
  std::vector<int> sweep_w, sweep_a;
  double sparsity = -1.0;
  std::string prune_scope = "layer";
  std::string report;  // file prefix for .json and .csv
  std::string export_path;
  bool find_clipping = false;
  int64_t holdout = 2000;
  int64_t batch_size = 100;
  int threads = 0;
  std::string device = "auto";
  bool strict_fp32 = false;
  bool bf16 = false;
};

// The GPU where asked for or, with "auto", where one is visible; the CPU otherwise.
Device pick_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  PSGD_CHECK(name != "cuda" || cuda_available(), "--device cuda: no GPU is visible to this process",
             cuda_built() ? "" : " (and this build has no CUDA backend)");
  return cuda_available() ? Device::CUDA : Device::CPU;
}

std::string metadata_or(const SafeTensorsFile& f, const std::string& key,
                        const std::string& fallback) {
  const auto it = f.metadata().find(key);
  return it == f.metadata().end() ? fallback : it->second;
}

std::string percent(double v) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(2);
  s << 100 * v << "%";
  return s.str();
}

// LP accuracy with weights at `w_bits` and activations at `a_bits` (32: float).
EvalResult evaluate_at(Evaluator& evaluator, Net& net, BatchSource& test, const EvalOptions& o,
                       int w_bits, int a_bits) {
  assign_quantizers(net.params(), {.w_bits = w_bits, .first_last = o.first_last, .psg = false});
  set_activation_quant(
      net, {.bits = a_bits == 32 ? 0 : a_bits,
            .range = o.act_clipping ? ActivationRange::Clipped : ActivationRange::Running,
            .clip_n = o.clipping_range});
  const EvalResult r = evaluator.evaluate_low_precision(test);
  set_activation_quant(net, {});
  return r;
}

// Quantized weights as integers: each quantized tensor as I8 levels with its F32 step under
// "<name>.scale"; everything else as stored.
void export_integer_model(Context& ctx, const Net& net, const EvalOptions& o) {
  const ParamStore& p = net.params();
  SafeTensorsWriter w;
  DeviceBuffer scratch(p.device(), 2 * sizeof(float));
  std::vector<float> values;
  std::vector<int8_t> levels;
  for (int id = 0; id < static_cast<int>(p.entries().size()); ++id) {
    const ParamEntry& e = p.entry(id);
    std::vector<int64_t> shape;
    for (int d = 0; d < e.shape.rank(); ++d) shape.push_back(e.shape[d]);
    if (storage_of(e.role) == ParamStorage::Counter) {
      const int64_t count = p.counter(id);
      w.add(e.name, StDType::I64, shape, &count);
      continue;
    }
    const Tensor v = p.value(id);
    values.resize(static_cast<size_t>(v.numel()));
    memory_copy(values.data(), Device::CPU, v.data, v.device, v.bytes());
    if (!e.quant.quantized()) {
      w.add(e.name, StDType::F32, shape, values.data());
      continue;
    }
    const float delta = fresh_delta(ctx, v, e.quant.bits, scratch.f32(0, Shape{2}));
    const float top = static_cast<float>(quant::weight_levels(e.quant.bits));
    levels.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i)
      levels[i] = static_cast<int8_t>(
          delta == 0.0f ? 0.0f : nearbyintf(std::clamp(values[i] / delta, -top, top)));
    w.add(e.name, StDType::I8, shape, levels.data());
    w.add(e.name + ".scale", StDType::F32, {}, &delta);
  }
  w.set_metadata("format", "psgd-int8-1");
  w.set_metadata("arch", net.arch());
  w.set_metadata("classes", std::to_string(net.classes()));
  w.set_metadata("w_bits", std::to_string(o.w_bits));
  w.write(o.export_path);
}

// Picks the clipping range n on a held-out part of the training set: the n whose W/A-quantized
// network is most accurate there.
float find_clipping(Context& ctx, Evaluator& evaluator, Net& net, const EvalOptions& o,
                    int a_bits) {
  const data::Dataset train_set =
      data::load_dataset(o.data, data::Split::Train, {data::parse_format(o.dataset), o.coarse});
  const int64_t holdout = std::min<int64_t>(o.holdout, train_set.size() - 1);
  const auto held =
      data::make_loader(train_set, {.batch_size = o.batch_size, .shuffle = false, .augment = false},
                        data::hold_out(train_set.size(), holdout, 0).validation, ctx.device());
  EvalOptions trial = o;
  trial.act_clipping = true;
  float best_n = 0.0f;
  double best = -1.0;
  std::printf("\nclipping range on %lld held-out training images (W%dA%d):\n",
              static_cast<long long>(holdout), o.w_bits, a_bits);
  for (float n : {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 8.0f, 10.0f}) {
    trial.clipping_range = n;
    const double acc = evaluate_at(evaluator, net, *held, trial, o.w_bits, a_bits).top1;
    std::printf("  n = %4.1f  %s\n", n, percent(acc).c_str());
    if (acc > best) {
      best = acc;
      best_n = n;
    }
  }
  return best_n;
}

// <prefix>.json and <prefix>.csv, each written whole or not at all.
void write_report(const std::vector<QuantReportRow>& rows, const std::string& prefix) {
  nlohmann::json j = nlohmann::json::array();
  std::ostringstream csv;
  csv << "name,bits,count,delta,mape,sse,sqnr_db,sparsity,q_zeros\n";
  for (const QuantReportRow& r : rows) {
    j.push_back({{"name", r.name},
                 {"bits", r.bits},
                 {"count", r.count},
                 {"delta", r.delta},
                 {"mape", r.mape},
                 {"sse", r.sse},
                 {"sqnr_db", r.sqnr_db},
                 {"sparsity", r.sparsity},
                 {"q_zeros", r.q_zeros}});
    csv << r.name << "," << r.bits << "," << r.count << "," << r.delta << "," << r.mape << ","
        << r.sse << "," << r.sqnr_db << "," << r.sparsity << "," << r.q_zeros << "\n";
  }
  const auto write = [](const std::string& path, const std::string& text) {
    const auto* bytes = reinterpret_cast<const std::byte*>(text.data());
    write_file_atomic(path, {bytes, bytes + text.size()});
  };
  write(prefix + ".json", j.dump(2) + "\n");
  write(prefix + ".csv", csv.str());
}

int run(EvalOptions o) {
  const SafeTensorsFile file = SafeTensorsFile::read(o.model);
  if (o.arch.empty()) o.arch = metadata_or(file, "arch", "");
  PSGD_CHECK(!o.arch.empty(), o.model, ": no architecture in the checkpoint; give --arch");
  if (o.w_bits == 0) {
    o.w_bits = static_cast<int>(metadata_integer(file, "w_bits", 4, 2, 32));
    PSGD_CHECK(o.w_bits <= 8 || o.w_bits == 32, o.model, ": metadata 'w_bits' is ", o.w_bits,
               ", not 2..8 or 32");
  }
  o.first_last = o.first_last || metadata_or(file, "first_last_quant", "0") == "1";
  PSGD_CHECK(!(o.bf16 && o.strict_fp32), "--bf16 and --strict-fp32 exclude each other");
  PSGD_CHECK(!o.act_clipping || o.act_quant ||
                 std::any_of(o.sweep_a.begin(), o.sweep_a.end(), [](int a) { return a < 32; }),
             "--act-clipping clips quantized activations: give --act-quant or --sweep-a bits "
             "below 32");
  Context ctx(pick_device(o.device), o.threads, 0, {.tf32 = !o.strict_fp32, .bf16 = o.bf16});
  const data::Dataset test_set =
      data::load_dataset(o.data, data::Split::Test, {data::parse_format(o.dataset), o.coarse});
  const auto test_loader = data::make_loader(
      test_set, {.batch_size = o.batch_size, .shuffle = false, .augment = false}, {}, ctx.device());
  BatchSource& test = *test_loader;
  auto net = make_net(o.arch, test_set.classes, ctx.device(), 0);
  load_checkpoint(o.model, *net, nullptr);

  Evaluator evaluator(ctx, *net);
  const EvalResult fp = evaluator.evaluate(test);
  std::printf(
      "%s on %s (%lld test images, %s): FP %s (loss %.4f)\n", o.arch.c_str(), test_set.name.c_str(),
      static_cast<long long>(fp.samples),
      (std::string(ctx.device() == Device::CPU ? "CPU, " : "GPU, ") + numerics_name(ctx)).c_str(),
      percent(fp.top1).c_str(), fp.loss);
  const int a_bits = o.act_quant ? o.a_bits : 32;
  const EvalResult lp = evaluate_at(evaluator, *net, test, o, o.w_bits, a_bits);
  std::printf("LP W%dA%d%s%s: %s (loss %.4f)\n", o.w_bits, a_bits,
              o.first_last ? ", first/last quantized" : "",
              a_bits < 32 && o.act_clipping ? ", activations clipped" : "",
              percent(lp.top1).c_str(), lp.loss);

  if (!o.sweep_w.empty()) {
    if (o.sweep_a.empty()) o.sweep_a = {32};
    std::printf("\nsweep (top-1):\n%8s", "");
    for (int a : o.sweep_a) std::printf("%10s", ("A" + std::to_string(a)).c_str());
    std::printf("\n");
    for (int w : o.sweep_w) {
      std::printf("%8s", ("W" + std::to_string(w)).c_str());
      for (int a : o.sweep_a)
        std::printf("%10s", percent(evaluate_at(evaluator, *net, test, o, w, a).top1).c_str());
      std::printf("\n");
    }
  }
  assign_quantizers(net->params(), {.w_bits = o.w_bits, .first_last = o.first_last, .psg = false});
  if (o.sparsity >= 0.0) {
    WeightsSnapshot keep(net->params());
    const std::vector<LayerSparsity> layers =
        prune_by_magnitude(net->params(), o.sparsity,
                           o.prune_scope == "global" ? PruneScope::Global : PruneScope::PerLayer);
    const EvalResult pruned = evaluator.evaluate(test);
    std::printf("\npruned to %s (%s): FP %s\n", percent(o.sparsity).c_str(), o.prune_scope.c_str(),
                percent(pruned.top1).c_str());
    for (const LayerSparsity& l : layers)
      std::printf("  %-34s %8lld weights  %s zero\n", l.name.c_str(),
                  static_cast<long long>(l.count), percent(l.sparsity()).c_str());
  }
  if (o.find_clipping) {
    EvalOptions chosen = o;
    chosen.act_clipping = true;
    chosen.clipping_range = find_clipping(ctx, evaluator, *net, o, o.act_quant ? o.a_bits : 4);
    const int a = o.act_quant ? o.a_bits : 4;
    std::printf("chosen n = %.1f: test LP W%dA%d %s\n", chosen.clipping_range, o.w_bits, a,
                percent(evaluate_at(evaluator, *net, test, chosen, o.w_bits, a).top1).c_str());
    assign_quantizers(net->params(),
                      {.w_bits = o.w_bits, .first_last = o.first_last, .psg = false});
  }
  if (!o.export_path.empty()) {
    export_integer_model(ctx, *net, o);
    std::printf("integer model (I8 levels + F32 scales) -> %s\n", o.export_path.c_str());
  }
  if (!o.report.empty()) {
    const std::vector<QuantReportRow> rows = quantization_report(ctx, net->params());
    std::printf("\n%-34s %4s %10s %10s %12s %9s %8s\n", "tensor", "bits", "delta", "MAPE", "SSE",
                "SQNR dB", "zeros");
    for (const QuantReportRow& r : rows)
      std::printf("%-34s %4d %10.3g %10.4f %12.5g %9.2f %8s\n", r.name.c_str(), r.bits, r.delta,
                  r.mape, r.sse, r.sqnr_db, percent(r.sparsity).c_str());
    write_report(rows, o.report);
    std::printf("report -> %s.json, %s.csv\n", o.report.c_str(), o.report.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  EvalOptions o;
  CLI::App app{
      "Evaluate a psgd checkpoint: FP and LP accuracy, bit-width sweeps, pruning, per-layer "
      "report"};
  app.add_option("--model", o.model, "checkpoint (safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--data", o.data, "dataset folder")->required()->check(CLI::ExistingDirectory);
  app.add_option("--dataset", o.dataset, "dataset format")
      ->check(CLI::IsMember({"cifar100", "cifar10", "auto"}))
      ->capture_default_str();
  app.add_flag("--coarse", o.coarse, "CIFAR-100 coarse labels");
  app.add_option("--arch", o.arch, "network (default: the checkpoint's)");
  app.add_option("--w-bits,--w_bit", o.w_bits,
                 "weight bits of the LP network (default: the checkpoint's)")
      ->check(tools::bit_width());
  auto* a_bits = app.add_option("--a-bits,--a_bit", o.a_bits, "activation bits with --act-quant")
                     ->check(tools::bit_width())
                     ->capture_default_str();
  app.add_flag("--first-last-quant,--first_last_quant", o.first_last,
               "quantize the first and last layers too");
  auto* act_quant =
      app.add_flag("--act-quant,--act_quant", o.act_quant, "quantize activations to --a-bits");
  a_bits->needs(act_quant);
  app.add_flag("--act-clipping,--act_clipping", o.act_clipping,
               "clip activations at beta + n gamma of the preceding BN (with --act-quant or a "
               "--sweep-a below 32)");
  app.add_option("--clipping-range,--clipping_range", o.clipping_range, "n of the clipping")
      ->check(tools::positive())
      ->capture_default_str();
  app.add_option("--lambda-s,--lambda_s", o.lambda_s, "recorded only (the reference's option)");
  app.add_option("--sweep", o.sweep_w, "weight bit widths to sweep, e.g. 8 6 4 3 2")
      ->check(tools::bit_width());
  app.add_option("--sweep-a", o.sweep_a, "activation bit widths of the sweep (default 32)")
      ->check(tools::bit_width());
  app.add_option("--sparsity", o.sparsity,
                 "evaluate the float network magnitude-pruned to this sparsity")
      ->check(tools::in_range(0.0, 1.0));
  app.add_option("--prune-scope", o.prune_scope, "prune each layer, or all at once")
      ->check(CLI::IsMember({"layer", "global"}))
      ->capture_default_str();
  app.add_option("--report", o.report,
                 "print the per-layer table and write it to <prefix>.json and .csv");
  app.add_flag("--find-clipping", o.find_clipping,
               "pick the clipping range on held-out training images");
  app.add_option("--holdout", o.holdout, "held-out training images for --find-clipping")
      ->check(tools::positive())
      ->capture_default_str();
  app.add_option("--export", o.export_path,
                 "write the LP model as I8 levels plus F32 scales (safetensors)");
  app.add_option("--batch-size", o.batch_size, "evaluation batch")
      ->check(tools::positive())
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")
      ->check(tools::thread_count())
      ->capture_default_str();
  app.add_option("--device", o.device, "cpu, cuda, or auto (the GPU where one is visible)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  app.add_flag("--strict-fp32", o.strict_fp32,
               "GPU: strict float32, no TF32 (the CPU's arithmetic)");
  app.add_flag("--bf16", o.bf16,
               "bf16 activations (weights stay float32), as a model trained with --bf16 runs");
  tools::one_line_errors(app, "psgd-eval");
  CLI11_PARSE(app, argc, argv);
  return tools::run_tool("psgd-eval", [&] { return run(o); });
}
