#include "engine/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "engine/data_parallel.h"
#include "engine/safetensors.h"
#include "kernels/ops.h"

namespace psgd {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Drops the rows of metrics.jsonl past `epoch`, the one the run starts after: a run cut off
// between an epoch's row and its checkpoint reaching the disk repeats that epoch, and an older
// run may have left rows in the folder. Every epoch then has one row.
void drop_rows_after(const std::filesystem::path& file, int64_t epoch) {
  std::ifstream in(file);
  if (!in) return;
  std::string kept, line;
  bool dropped = false;
  while (std::getline(in, line)) {
    const nlohmann::json row = nlohmann::json::parse(line, nullptr, false);
    if (row.is_object() && row.contains("epoch") && row["epoch"].is_number_integer() &&
        row["epoch"].get<int64_t>() > epoch) {
      dropped = true;
      continue;
    }
    kept += line + "\n";
  }
  if (!dropped) return;
  const auto* bytes = reinterpret_cast<const std::byte*>(kept.data());
  write_file_atomic(file.string(), {bytes, bytes + kept.size()});
}

// Stops the run on a non-finite loss sum (read every few steps: `step` is the last one summed).
void check_finite(double loss_sum, int64_t epoch, int64_t step) {
  PSGD_CHECK(std::isfinite(loss_sum), "epoch ", epoch, ", by step ", step, ": the loss is ",
             loss_sum,
             "; stopping (checkpoints of earlier epochs are intact; try a lower learning rate)");
}

}  // namespace

Trainer::Trainer(Context& ctx, Net& net, Optimizer& optimizer, BatchSource& train,
                 BatchSource& test, TrainerConfig config, TrainProgress progress)
    : ctx_(ctx),
      net_(net),
      optimizer_(optimizer),
      train_(train),
      test_(test),
      config_(std::move(config)),
      progress_(progress),
      comm_(config_.comm ? *config_.comm : single_rank()),
      step_(ctx, net, optimizer, comm_),
      evaluator_(ctx, net, comm_),
      quantized_(!optimizer.ranges().ids().empty()) {
  config_.schedule.validate();
  if (comm_.rank() != 0) {  // rank 0 speaks and writes for the job
    config_.log = nullptr;
    config_.out_dir.clear();
  }
  if (!config_.out_dir.empty()) {
    std::filesystem::create_directories(config_.out_dir);
    drop_rows_after(std::filesystem::path(config_.out_dir) / "metrics.jsonl", progress_.epoch);
  }
}

TrainProgress Trainer::run() {
  try {
    run_epochs();
  } catch (const std::exception& e) {
    // The last good epoch's checkpoint reaches the disk; if its write failed, both are said.
    const std::string write_failure = checkpoints_.settle();
    if (write_failure.empty()) throw;
    PSGD_FAIL(user_message(e), "; and the last checkpoint was not written: ", write_failure);
  }
  checkpoints_.finish();
  return progress_;
}

void Trainer::run_epochs() {
  for (int64_t epoch = std::max(config_.first_epoch, progress_.epoch + 1);
       epoch <= config_.last_epoch; ++epoch) {
    const auto start = Clock::now();
    const EpochStats train = train_epoch(epoch);
    // One model for the whole job: rank 0's BN statistics, and replicas checked identical.
    broadcast_buffers(ctx_, comm_, net_);
    check_replicas_agree(comm_, net_, optimizer_);
    const EvalResult fp = evaluator_.evaluate(test_);
    // Weights broken by the epoch's last updates show here first: no checkpoint of them.
    PSGD_CHECK(std::isfinite(fp.loss), "epoch ", epoch, ": the evaluation loss is ", fp.loss,
               "; stopping before this epoch's checkpoint (those of earlier epochs are intact; "
               "try a lower learning rate)");
    const EvalResult lp = quantized_ ? evaluator_.evaluate_low_precision(test_) : fp;
    const bool fp_best = fp.top1 > progress_.best_fp, lp_best = lp.top1 > progress_.best_lp;
    progress_.epoch = epoch;
    progress_.best_fp = std::max(progress_.best_fp, fp.top1);
    progress_.best_lp = std::max(progress_.best_lp, lp.top1);
    const float last_lr = config_.schedule.lr(static_cast<int>(epoch));  // of its last step
    record(epoch, last_lr, train, fp, lp, seconds_since(start), fp_best, lp_best);
  }
}

Trainer::EpochStats Trainer::train_epoch(int64_t epoch) {
  const auto start = Clock::now();
  auto last_report = start;
  const int64_t batches = train_.batches_per_epoch();
  // Reading the sums waits for the device: on a GPU, only every few steps.
  const int64_t check_every = ctx_.device() == Device::CPU ? 1 : 25;
  int64_t step = 0;
  step_.reset_totals();
  train_.start_epoch(epoch);
  Tensor images, labels;
  while (train_.next(images, labels)) {
    ++step;
    step_.run(images, labels,
              config_.schedule.lr(static_cast<int>(epoch), static_cast<double>(step) / batches));
    const bool report =
        config_.log &&
        (config_.interactive ? seconds_since(last_report) > 0.25
                             : step % std::max<int64_t>(1, batches / 4) == 0 && step < batches);
    if (!report && step % check_every != 0) continue;
    const auto totals = step_.totals();
    check_finite(totals[ops::kMetricLossSum], epoch, step);
    if (!report) continue;
    last_report = Clock::now();
    const double seen = totals[ops::kMetricSamples];
    *config_.log << (config_.interactive ? "\r" : "") << "epoch " << epoch << " " << step << "/"
                 << batches << "  loss " << std::fixed << std::setprecision(4)
                 << totals[ops::kMetricLossSum] / seen << "  " << std::setprecision(0)
                 << seen * comm_.world() / seconds_since(start) << " img/s"
                 << (config_.interactive ? "   " : "\n") << std::flush;
  }
  if (config_.log && config_.interactive) *config_.log << "\r" << std::string(60, ' ') << "\r";
  std::array<double, ops::kMetricFields> totals = step_.totals();
  check_finite(totals[ops::kMetricLossSum], epoch, step);
  comm_.allreduce_host(totals, ReduceOp::Sum);
  const double seen = totals[ops::kMetricSamples];
  PSGD_CHECK(seen > 0, "epoch ", epoch, ": the training set gave no batches");
  return {totals[ops::kMetricLossSum] / seen, totals[ops::kMetricCorrect] / seen,
          seen / seconds_since(start)};
}

void Trainer::record(int64_t epoch, float lr, const EpochStats& train, const EvalResult& fp,
                     const EvalResult& lp, double seconds, bool fp_best, bool lp_best) {
  if (config_.log) {
    std::ostream& log = *config_.log;
    log << std::fixed << "epoch " << epoch << "/" << config_.last_epoch << "  lr "
        << std::setprecision(5) << lr << "  train loss " << std::setprecision(4) << train.loss
        << " acc " << std::setprecision(2) << 100 * train.accuracy << "%  FP " << 100 * fp.top1
        << "% (best " << 100 * progress_.best_fp << "%)";
    if (quantized_)
      log << "  LP " << 100 * lp.top1 << "% (best " << 100 * progress_.best_lp << "%)";
    log << "  " << std::setprecision(0) << train.images_per_second << " img/s  "
        << std::setprecision(1) << seconds << " s" << std::endl;
  }
  if (config_.out_dir.empty()) return;
  // Checked finite, and copied, before the epoch's row: weights broken by the epoch's updates
  // can still give a finite evaluation loss, and must neither be written nor be recorded.
  const std::string broken = non_finite_tensor(net_.params());
  PSGD_CHECK(broken.empty(), "epoch ", epoch, ": ", broken,
             "; stopping before this epoch's checkpoint (those of earlier epochs are intact; try a "
             "lower learning rate)");
  SafeTensorsWriter contents = checkpoint_contents(net_, optimizer_, progress_, config_.metadata);
  const nlohmann::json row = {{"epoch", epoch},
                              {"lr", lr},
                              {"train_loss", train.loss},
                              {"train_acc", train.accuracy},
                              {"fp_loss", fp.loss},
                              {"fp_acc", fp.top1},
                              {"fp_top5", fp.top5},
                              {"lp_loss", lp.loss},
                              {"lp_acc", lp.top1},
                              {"lp_top5", lp.top5},
                              {"best_fp", progress_.best_fp},
                              {"best_lp", progress_.best_lp},
                              {"images_per_s", train.images_per_second},
                              {"seconds", seconds}};
  std::ofstream metrics(std::filesystem::path(config_.out_dir) / "metrics.jsonl", std::ios::app);
  metrics << row.dump() << "\n";
  metrics.close();  // flushed: a full disk shows here, not later
  PSGD_CHECK(!metrics.fail(), config_.out_dir, "/metrics.jsonl: cannot write");
  std::vector<std::string> paths;
  const auto add = [&](const char* name) {
    paths.push_back((std::filesystem::path(config_.out_dir) / name).string());
  };
  add("last.safetensors");
  if (fp_best) add("best_fp.safetensors");
  if (lp_best && quantized_) add("best_lp.safetensors");
  checkpoints_.submit(std::move(contents), std::move(paths));
}

}  // namespace psgd
