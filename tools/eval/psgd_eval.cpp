// psgd-eval: evaluates a checkpoint on a test set as the reference does, in full precision (FP)
// and low precision (LP: weights on their grid, optionally quantized activations), and beyond
// the reference: a sweep of bit widths, magnitude pruning, and the per-layer report.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/dataset.h"
#include "data/loader.h"
#include "engine/activation_quant.h"
#include "engine/pruning.h"
#include "engine/quant_report.h"
#include "engine/safetensors.h"
#include "engine/train_state.h"
#include "engine/trainer.h"
#include "engine/weight_quant.h"
#include "nets/nets.h"
#include "nets/quant_config.h"

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
  int64_t batch_size = 100;
  int threads = 0;
};

std::string metadata_or(const SafeTensorsFile& f, const std::string& key, const std::string& fallback) {
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
EvalResult evaluate_at(Context& ctx, Net& net, BatchSource& test, const EvalOptions& o, int w_bits,
                       int a_bits) {
  assign_quantizers(net.params(), {.w_bits = w_bits, .first_last = o.first_last, .psg = false});
  set_activation_quant(net, {.bits = a_bits == 32 ? 0 : a_bits,
                             .range = o.act_clipping ? ActivationRange::Clipped : ActivationRange::Running,
                             .clip_n = o.clipping_range});
  const EvalResult r = evaluate_low_precision(ctx, net, test);
  set_activation_quant(net, {});
  return r;
}

void write_report(const std::vector<QuantReportRow>& rows, const std::string& prefix) {
  nlohmann::json j = nlohmann::json::array();
  std::ofstream csv(prefix + ".csv");
  csv << "name,bits,count,delta,mape,sse,sqnr_db,sparsity,q_zeros\n";
  for (const QuantReportRow& r : rows) {
    j.push_back({{"name", r.name}, {"bits", r.bits}, {"count", r.count}, {"delta", r.delta},
                 {"mape", r.mape}, {"sse", r.sse}, {"sqnr_db", r.sqnr_db},
                 {"sparsity", r.sparsity}, {"q_zeros", r.q_zeros}});
    csv << r.name << "," << r.bits << "," << r.count << "," << r.delta << "," << r.mape << ","
        << r.sse << "," << r.sqnr_db << "," << r.sparsity << "," << r.q_zeros << "\n";
  }
  std::ofstream(prefix + ".json") << j.dump(2) << "\n";
  PSGD_CHECK(csv.good(), prefix, ".csv: cannot write");
}

int run(EvalOptions o) {
  const SafeTensorsFile file = SafeTensorsFile::read(o.model);
  if (o.arch.empty()) o.arch = metadata_or(file, "arch", "");
  PSGD_CHECK(!o.arch.empty(), o.model, ": no architecture in the checkpoint; give --arch");
  if (o.w_bits == 0) o.w_bits = std::stoi(metadata_or(file, "w_bits", "4"));
  o.first_last = o.first_last || metadata_or(file, "first_last_quant", "0") == "1";
  Context ctx(Device::CPU, o.threads, 0);
  const data::Dataset test_set = data::load_dataset(
      o.data, data::Split::Test, {data::parse_format(o.dataset), o.coarse});
  data::Loader test(test_set, {.batch_size = o.batch_size, .shuffle = false, .augment = false});
  auto net = make_net(o.arch, test_set.classes, Device::CPU, 0);
  load_checkpoint(o.model, *net, nullptr);

  const EvalResult fp = evaluate(ctx, *net, test);
  std::printf("%s on %s (%lld test images): FP %s (loss %.4f)\n", o.arch.c_str(),
              test_set.name.c_str(), static_cast<long long>(fp.samples), percent(fp.top1).c_str(), fp.loss);
  const int a_bits = o.act_quant ? o.a_bits : 32;
  const EvalResult lp = evaluate_at(ctx, *net, test, o, o.w_bits, a_bits);
  std::printf("LP W%dA%d%s%s: %s (loss %.4f)\n", o.w_bits, a_bits,
              o.first_last ? ", first/last quantized" : "",
              a_bits < 32 && o.act_clipping ? ", activations clipped" : "", percent(lp.top1).c_str(), lp.loss);

  if (!o.sweep_w.empty()) {
    if (o.sweep_a.empty()) o.sweep_a = {32};
    std::printf("\nsweep (top-1):\n%8s", "");
    for (int a : o.sweep_a) std::printf("%10s", ("A" + std::to_string(a)).c_str());
    std::printf("\n");
    for (int w : o.sweep_w) {
      std::printf("%8s", ("W" + std::to_string(w)).c_str());
      for (int a : o.sweep_a) std::printf("%10s", percent(evaluate_at(ctx, *net, test, o, w, a).top1).c_str());
      std::printf("\n");
    }
  }
  assign_quantizers(net->params(), {.w_bits = o.w_bits, .first_last = o.first_last, .psg = false});
  if (o.sparsity >= 0.0) {
    WeightsSnapshot keep(net->params());
    const std::vector<LayerSparsity> layers = prune_by_magnitude(
        net->params(), o.sparsity, o.prune_scope == "global" ? PruneScope::Global : PruneScope::PerLayer);
    const EvalResult pruned = evaluate(ctx, *net, test);
    std::printf("\npruned to %s (%s): FP %s\n", percent(o.sparsity).c_str(), o.prune_scope.c_str(),
                percent(pruned.top1).c_str());
    for (const LayerSparsity& l : layers)
      std::printf("  %-34s %8lld weights  %s zero\n", l.name.c_str(), static_cast<long long>(l.count),
                  percent(l.sparsity()).c_str());
  }
  if (!o.report.empty()) {
    const std::vector<QuantReportRow> rows = quantization_report(ctx, net->params());
    std::printf("\n%-34s %4s %10s %10s %12s %9s %8s\n", "tensor", "bits", "delta", "MAPE", "SSE", "SQNR dB", "zeros");
    for (const QuantReportRow& r : rows)
      std::printf("%-34s %4d %10.3g %10.4f %12.5g %9.2f %8s\n", r.name.c_str(), r.bits, r.delta, r.mape,
                  r.sse, r.sqnr_db, percent(r.sparsity).c_str());
    write_report(rows, o.report);
    std::printf("report -> %s.json, %s.csv\n", o.report.c_str(), o.report.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  EvalOptions o;
  CLI::App app{"Evaluate a psgd checkpoint: FP and LP accuracy, bit-width sweeps, pruning, per-layer report"};
  const auto bits = CLI::Validator(
      [](std::string& s) {
        const int b = std::stoi(s);
        return (b >= 2 && b <= 8) || b == 32 ? std::string() : "bits must be 2..8 or 32";
      },
      "2..8|32");
  app.add_option("--model", o.model, "checkpoint (safetensors)")->required()->check(CLI::ExistingFile);
  app.add_option("--data", o.data, "dataset folder")->required()->check(CLI::ExistingDirectory);
  app.add_option("--dataset", o.dataset, "dataset format")->check(CLI::IsMember({"cifar100", "cifar10", "auto"}))->capture_default_str();
  app.add_flag("--coarse", o.coarse, "CIFAR-100 coarse labels");
  app.add_option("--arch", o.arch, "network (default: the checkpoint's)");
  app.add_option("--w-bits,--w_bit", o.w_bits, "weight bits of the LP network (default: the checkpoint's)")->check(bits);
  app.add_option("--a-bits,--a_bit", o.a_bits, "activation bits with --act-quant")->check(bits)->capture_default_str();
  app.add_flag("--first-last-quant,--first_last_quant", o.first_last, "quantize the first and last layers too");
  app.add_flag("--act-quant,--act_quant", o.act_quant, "quantize activations to --a-bits");
  app.add_flag("--act-clipping,--act_clipping", o.act_clipping, "clip activations at beta + n gamma of the preceding BN");
  app.add_option("--clipping-range,--clipping_range", o.clipping_range, "n of the clipping")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--lambda-s,--lambda_s", o.lambda_s, "recorded only (the reference's option)");
  app.add_option("--sweep", o.sweep_w, "weight bit widths to sweep, e.g. 8 6 4 3 2")->check(bits);
  app.add_option("--sweep-a", o.sweep_a, "activation bit widths of the sweep (default 32)")->check(bits);
  app.add_option("--sparsity", o.sparsity, "evaluate the float network magnitude-pruned to this sparsity")->check(CLI::Range(0.0, 1.0));
  app.add_option("--prune-scope", o.prune_scope, "prune each layer, or all at once")->check(CLI::IsMember({"layer", "global"}))->capture_default_str();
  app.add_option("--report", o.report, "print the per-layer table and write it to <prefix>.json and .csv");
  app.add_option("--batch-size", o.batch_size, "evaluation batch")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::cerr << "psgd-eval: " << user_message(e) << std::endl;
    return 1;
  }
}
