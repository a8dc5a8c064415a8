// psgd-train's options: their defaults, the command line (with the reference's spellings as
// aliases), validation, and config.json.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace psgd::train {

struct TrainOptions {
  std::string arch = "resnet32";
  std::string data;
  std::string dataset = "auto";  // cifar100 | cifar10 | auto
  bool coarse = false;
  int epochs = 150;
  double lr = 0.1;  // lr and gamma in double, as the reference's Python floats (LrSchedule)
  float momentum = 0.9f;
  float weight_decay = -1.0f;  // negative: the reference's 1e-4, or 0 at 2 bits
  std::vector<int> decay_epochs = {82, 123};
  double gamma = 0.1;
  std::string schedule = "multistep";  // multistep | cosine
  int warmup_epochs = 0;
  int64_t batch_size = 128;
  int64_t eval_batch_size = 100;
  std::string optimizer = "sgd";  // sgd | adam
  int w_bits = 4;
  float lambda_s = 0.0f;
  std::string target = "grid";  // grid | zero
  bool first_last_quant = false;
  int a_bits = 32;
  std::string init;
  uint64_t seed = 0;
  std::string out;
  std::string device = "auto";
  int gpu = 0;
  int threads = 0;
  bool sync_bn = false;        // BN statistics over the whole global batch in a job
  bool nccl = false;           // NCCL collectives even for a lone GPU rank (tests that path)
  bool strict_fp32 = false;    // no TF32 on the GPU
  bool deterministic = false;  // deterministic cuDNN algorithms
  bool bf16 = false;           // bf16 activations and activation gradients
  int64_t train_subset = 0, test_subset = 0;  // 0: everything
  int64_t holdout = 0;  // > 0: evaluate on this many held-out training images, not the test set
  bool no_augment = false, no_shuffle = false, drop_last = false;
  std::vector<float> norm_mean, norm_std;  // empty: the dataset's own
  int first_epoch = 1;  // set by the run: the first epoch it trained (the schedule starts here)
  std::string data_fingerprint;  // set by the run: the images it trains on (data::fingerprint)

  float effective_weight_decay() const { return weight_decay >= 0 ? weight_decay : (w_bits == 2 ? 0.0f : 1e-4f); }
  // The reference's Adam learning rate: lr x 1e-2 x lambda_s.
  double effective_lr() const { return optimizer == "adam" ? lr * 1e-2 * lambda_s : lr; }
};

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(
    TrainOptions, arch, data, dataset, coarse, epochs, lr, momentum, weight_decay, decay_epochs,
    gamma, schedule, warmup_epochs, batch_size, eval_batch_size, optimizer, w_bits, lambda_s,
    target, first_last_quant, a_bits, init, seed, out, device, gpu, threads, sync_bn, nccl,
    strict_fp32, deterministic, bf16, train_subset, test_subset, holdout, no_augment, no_shuffle,
    drop_last, norm_mean, norm_std, first_epoch, data_fingerprint)

// What a command asks of its output folder, beside the run's options (not in config.json).
struct Invocation {
  std::string resume;      // --resume: continue the run in this folder
  bool overwrite = false;  // --overwrite: start anew where a run's checkpoints are
};

// Registers every option on `app`.
void add_options(CLI::App& app, TrainOptions& o, Invocation& invocation);
// The options a resumed run may change: where the data now is, the last epoch, the device and
// its threads. The rest are the run's, from its config.json.
inline constexpr const char* kResumableOptions[] = {"--resume", "--epochs", "--data", "--threads",
                                                    "--device", "--gpu"};
// A clear error for an impossible combination; `world` is the number of ranks in the job.
void validate(const TrainOptions& o, int world = 1);
// Combinations refused for new runs only (a run recorded before they were refused can resume).
void validate_new_run(const TrainOptions& o);

}  // namespace psgd::train
