// psgd-train: trains a reference network on CIFAR-format data with PSGD (or plain SGD with
// --lambda-s 0), evaluating the float (FP) and low-precision (LP) network after every epoch.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "data/dataset.h"
#include "data/loader.h"
#include "engine/safetensors.h"
#include "engine/trainer.h"
#include "nets/nets.h"
#include "nets/quant_config.h"
#include "tools/train/train_options.h"

using namespace psgd;
using namespace psgd::train;
namespace fs = std::filesystem;

namespace {

std::vector<int64_t> subset(int64_t size, int64_t keep, uint64_t seed) {
  if (keep == 0 || keep >= size) return {};
  return data::hold_out(size, size - keep, seed).train;
}

Device pick_device(const TrainOptions& o) {
  PSGD_CHECK(o.device != "cuda", "--device cuda: this build's CUDA backend has no training kernels "
                                 "yet; use --device cpu");
  if (o.device == "auto" && cuda_available())
    std::cout << "note: a GPU is present, but the CUDA training kernels are not built yet; "
                 "training on the CPU\n";
  return Device::CPU;
}

TrainOptions resumed_options(const std::string& dir, const CLI::App& app, const TrainOptions& given) {
  const fs::path config = fs::path(dir) / "config.json";
  PSGD_CHECK(fs::exists(config), "--resume ", dir, ": no config.json (not a psgd-train output folder)");
  TrainOptions o;
  try {
    o = nlohmann::json::parse(std::ifstream(config)).get<TrainOptions>();
  } catch (const nlohmann::json::exception& e) {
    PSGD_FAIL(config.string(), ": unreadable (", e.what(), ")");
  }
  if (app.count("--epochs") || app.count("--epoch")) o.epochs = given.epochs;  // extend the run
  if (app.count("--threads")) o.threads = given.threads;
  o.out = dir;
  return o;
}

int run(TrainOptions o, const std::string& resume, const CLI::App& app) {
  if (!resume.empty()) o = resumed_options(resume, app, o);
  if (o.out.empty()) o.out = "runs/" + o.arch;
  validate(o);
  Context ctx(pick_device(o), o.threads, o.seed);

  const data::DatasetOptions dopts{data::parse_format(o.dataset), o.coarse};
  data::Dataset train_set = data::load_dataset(o.data, data::Split::Train, dopts);
  data::Dataset test_set = o.holdout > 0 ? data::Dataset{} : data::load_dataset(o.data, data::Split::Test, dopts);
  for (data::Dataset* d : {&train_set, &test_set}) {
    if (!o.norm_mean.empty()) std::copy(o.norm_mean.begin(), o.norm_mean.end(), d->norm.mean.begin());
    if (!o.norm_std.empty()) std::copy(o.norm_std.begin(), o.norm_std.end(), d->norm.std.begin());
  }
  std::vector<int64_t> train_indices = subset(train_set.size(), o.train_subset, o.seed), test_indices;
  if (o.holdout > 0) {  // validation images come out of the training set
    const data::HeldOut split = data::hold_out(train_set.size(), o.holdout, o.seed);
    train_indices = split.train;
    if (o.train_subset > 0 && o.train_subset < static_cast<int64_t>(split.train.size()))
      train_indices.resize(static_cast<size_t>(o.train_subset));
    test_indices = split.validation;
  } else {
    test_indices = subset(test_set.size(), o.test_subset, o.seed);
  }
  const data::Dataset& eval_set = o.holdout > 0 ? train_set : test_set;
  data::Loader train(train_set, {.batch_size = o.batch_size, .shuffle = !o.no_shuffle,
                                 .augment = !o.no_augment, .drop_last = o.drop_last, .seed = o.seed},
                     train_indices);
  data::Loader test(eval_set, {.batch_size = o.eval_batch_size, .shuffle = false, .augment = false},
                    test_indices);

  auto net = make_net(o.arch, train_set.classes, ctx.device(), o.seed);
  assign_quantizers(net->params(), {.w_bits = o.w_bits, .first_last = o.first_last_quant,
                                    .psg = o.lambda_s > 0,
                                    .target = o.target == "zero" ? QuantTarget::Zero : QuantTarget::Grid});
  Optimizer optimizer(net->params(), {.kind = o.optimizer == "adam" ? OptimizerKind::Adam : OptimizerKind::Sgd,
                                      .momentum = o.momentum,
                                      .weight_decay = o.effective_weight_decay(),
                                      .lambda_s = o.lambda_s});
  TrainProgress progress;
  const fs::path last = fs::path(o.out) / "last.safetensors";
  if (!resume.empty()) {
    PSGD_CHECK(fs::exists(last), "--resume ", resume, ": no last.safetensors to continue from");
    progress = load_checkpoint(last.string(), *net, &optimizer);
    std::cout << "resuming " << o.out << " after epoch " << progress.epoch << "\n";
  } else {
    if (!o.init.empty()) {
      progress.epoch = load_checkpoint(o.init, *net, nullptr).epoch;
      std::cout << "starting from " << o.init << " (epoch " << progress.epoch << ")\n";
    }
    o.first_epoch = static_cast<int>(progress.epoch) + 1;
    fs::create_directories(o.out);
    const std::string config = nlohmann::json(o).dump(2) + "\n";
    write_file_atomic((fs::path(o.out) / "config.json").string(),
                      {reinterpret_cast<const std::byte*>(config.data()),
                       reinterpret_cast<const std::byte*>(config.data() + config.size())});
  }

  std::cout << net->arch() << " on " << train_set.name << " (" << train.samples() << " training, "
            << test.samples() << (o.holdout > 0 ? " held-out" : " test") << " images, " << train_set.classes << " classes), "
            << device_name(ctx.device()) << " with " << ctx.threads() << " threads; W"
            << o.w_bits << (o.first_last_quant ? " first/last quantized" : "") << ", lambda_s "
            << o.lambda_s << ", " << o.optimizer << " lr " << o.effective_lr() << "\n";
  TrainerConfig tc;
  tc.first_epoch = progress.epoch + 1;
  tc.last_epoch = o.epochs;
  tc.schedule = {.kind = o.schedule == "cosine" ? LrSchedule::Kind::Cosine : LrSchedule::Kind::MultiStep,
                 .base_lr = o.effective_lr(), .milestones = o.decay_epochs, .gamma = o.gamma,
                 .first_epoch = o.first_epoch,
                 .last_epoch = std::max(o.epochs, o.first_epoch),
                 .warmup_epochs = o.warmup_epochs};
  tc.out_dir = o.out;
  tc.metadata = {{"w_bits", std::to_string(o.w_bits)}, {"a_bits", std::to_string(o.a_bits)},
                 {"lambda_s", std::to_string(o.lambda_s)}, {"first_last_quant", o.first_last_quant ? "1" : "0"},
                 {"dataset", train_set.name}, {"seed", std::to_string(o.seed)}};
  tc.log = &std::cout;
  tc.interactive = isatty(fileno(stdout));
  Trainer trainer(ctx, *net, optimizer, train, test, tc, progress);
  const TrainProgress done = trainer.run();
  std::cout << "done: best FP " << 100 * done.best_fp << "%, best LP " << 100 * done.best_lp
            << "%; checkpoints, config.json and metrics.jsonl in " << o.out << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  TrainOptions options;
  std::string resume;
  CLI::App app{"Train a CIFAR network with PSGD (Position-based Scaled Gradient); --lambda-s 0 is plain SGD"};
  add_options(app, options, resume);
  CLI11_PARSE(app, argc, argv);
  try {
    return run(options, resume, app);
  } catch (const std::exception& e) {
    std::cerr << "psgd-train: " << user_message(e) << std::endl;
    return 1;
  }
}
