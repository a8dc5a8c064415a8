#include "tools/train/train_options.h"

#include <cmath>
#include <filesystem>

#include "engine/check.h"
#include "nets/nets.h"
#include "tools/cli_support.h"

namespace psgd::train {

void add_options(CLI::App& app, TrainOptions& o, Invocation& invocation) {
  app.add_option("--arch", o.arch, "network")->check(CLI::IsMember(net_names()))->capture_default_str();
  app.add_option("--data", o.data, "dataset folder (CIFAR binary files or psgd-data output)");
  app.add_option("--dataset", o.dataset, "dataset format")->check(CLI::IsMember({"cifar100", "cifar10", "auto"}))->capture_default_str();
  app.add_flag("--coarse", o.coarse, "CIFAR-100: train on the 20 coarse classes");
  app.add_option("--epochs,--epoch", o.epochs, "last epoch")->check(tools::positive())->capture_default_str();
  app.add_option("--lr", o.lr, "learning rate (Adam: multiplied by 1e-2 x lambda_s, as the reference)")->check(tools::positive())->capture_default_str();
  app.add_option("--momentum", o.momentum, "SGD momentum")->check(tools::in_range(0.0, 1.0))->capture_default_str();
  app.add_option("--weight-decay,--weight_decay", o.weight_decay, "L2 weight decay (default 1e-4, 0 at 2 bits)")->check(tools::non_negative());
  app.add_option("--decay-epochs,--decay_epoch", o.decay_epochs, "multistep: epochs from which lr is multiplied by gamma")->check(tools::positive())->capture_default_str();
  app.add_option("--gamma", o.gamma, "multistep decay factor")->check(tools::positive())->capture_default_str();
  app.add_option("--schedule", o.schedule, "learning-rate schedule")->check(CLI::IsMember({"multistep", "cosine"}))->capture_default_str();
  app.add_option("--warmup-epochs", o.warmup_epochs, "linear warm-up over this many epochs, ramped every step")->check(tools::non_negative())->capture_default_str();
  app.add_option("--batch-size,--batch_size", o.batch_size, "training batch (global: split evenly over the ranks of a job)")->check(tools::positive())->capture_default_str();
  app.add_option("--eval-batch-size", o.eval_batch_size, "test batch")->check(tools::positive())->capture_default_str();
  auto* optimizer = app.add_option("--optimizer", o.optimizer, "optimizer")->check(CLI::IsMember({"sgd", "adam"}))->capture_default_str();
  app.add_flag_callback("--adam", [&o] { o.optimizer = "adam"; }, "the reference's spelling of --optimizer adam")->excludes(optimizer);
  app.add_option("--w-bits,--w_bit", o.w_bits, "weight bits (32: float)")->check(tools::bit_width())->capture_default_str();
  app.add_option("--lambda-s,--lambda_s", o.lambda_s, "PSG strength (0: vanilla SGD)")->check(tools::non_negative())->capture_default_str();
  app.add_option("--target", o.target, "PSG target: the quantization grid, or zero (pruning)")->check(CLI::IsMember({"grid", "zero"}))->capture_default_str();
  app.add_flag("--first-last-quant,--first_last_quant", o.first_last_quant, "quantize the first and last layers too (8 bits below 4)");
  app.add_option("--a-bits,--a_bit", o.a_bits, "activation bits, recorded for evaluation")->check(tools::bit_width())->capture_default_str();
  app.add_option("--init,--load_pretrained", o.init, "start from these weights (safetensors), at their epoch + 1");
  app.add_option("--resume", invocation.resume, "continue the run in this output folder (only --epochs, --data, --threads, --device and --gpu may change)");
  app.add_flag("--overwrite", invocation.overwrite, "start anew in an --out folder that holds a run, replacing its checkpoints");
  app.add_option("--seed", o.seed, "initialisation, order, augmentation and dropout seed")->capture_default_str();
  app.add_option("--out", o.out, "output folder (default runs/<arch>)");
  app.add_option("--device", o.device, "cpu, cuda, or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}))->capture_default_str();
  app.add_option("--gpu,--cu_num", o.gpu, "GPU index (single rank; ranks of a job take the GPU of their local rank)")->check(tools::non_negative())->capture_default_str();
  app.add_flag("--strict-fp32", o.strict_fp32, "GPU: strict float32, no TF32 tensor cores (parity runs)");
  app.add_flag("--bf16", o.bf16, "bf16 mixed precision: activations and their gradients in bfloat16; weights, optimizer and PSGD arithmetic in float32 (CPU: the slow reference)");
  app.add_flag("--deterministic", o.deterministic, "GPU: deterministic algorithms, so that two runs give identical weights");
  app.add_flag("--sync-bn", o.sync_bn, "with several ranks: BN statistics over the whole global batch (default: per rank)");
  app.add_flag("--nccl", o.nccl, "use NCCL collectives even for a single GPU rank (checks the multi-GPU path)");
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")->check(tools::thread_count())->capture_default_str();
  app.add_option("--train-subset", o.train_subset, "train on this many samples, picked at random by --seed (0: all)")->check(tools::non_negative())->capture_default_str();
  app.add_option("--holdout", o.holdout, "evaluate on this many held-out training images instead of the test set")->check(tools::non_negative())->capture_default_str();
  app.add_flag("--no-augment", o.no_augment, "train on the images as stored (debugging, parity runs)");
  app.add_flag("--no-shuffle", o.no_shuffle, "keep the stored order every epoch");
  app.add_flag("--drop-last", o.drop_last, "drop the last partial training batch");
  app.add_option("--norm-mean", o.norm_mean, "override the per-channel mean (3 values, pixels in [0, 1])")->expected(3);
  app.add_option("--norm-std", o.norm_std, "override the per-channel std (3 values)")->expected(3);
  app.add_option("--test-subset", o.test_subset, "evaluate on this many test samples, picked at random by --seed (0: all)")->check(tools::non_negative())->capture_default_str();
}

void validate(const TrainOptions& o, int world) {
  PSGD_CHECK(o.batch_size % world == 0, "--batch-size ", o.batch_size, " is the global batch and does not split evenly over ",
             world, " ranks");
  PSGD_CHECK(o.eval_batch_size % world == 0, "--eval-batch-size ", o.eval_batch_size,
             " does not split evenly over ", world, " ranks");
  PSGD_CHECK(!o.nccl || o.device != "cpu", "--nccl needs GPU ranks (--device cuda)");
  PSGD_CHECK(!(o.bf16 && o.strict_fp32), "--bf16 and --strict-fp32 exclude each other");
  PSGD_CHECK(!o.data.empty(), "--data is required: a folder with CIFAR binary files or psgd-data output");
  PSGD_CHECK(std::filesystem::is_directory(o.data), "--data ", o.data, ": no such folder");
  PSGD_CHECK(o.init.empty() || std::filesystem::exists(o.init), "--init ", o.init, ": no such file");
  PSGD_CHECK(o.optimizer != "adam" || o.lambda_s > 0,
             "--optimizer adam uses lr x 1e-2 x lambda_s (the reference's rule): give --lambda-s > 0");
  for (float m : o.norm_mean) PSGD_CHECK(std::isfinite(m), "--norm-mean values must be finite");
  for (float s : o.norm_std) PSGD_CHECK(std::isfinite(s) && s > 0, "--norm-std values must be finite and positive");
  PSGD_CHECK(o.lambda_s == 0 || o.w_bits != 32, "--lambda-s needs quantized weights (--w-bits 2..8)");
}

void validate_new_run(const TrainOptions& o) {
  PSGD_CHECK(!o.first_last_quant || o.w_bits != 32, "--first-last-quant needs quantized weights (--w-bits 2..8)");
  PSGD_CHECK(o.holdout == 0 || o.test_subset == 0,
             "--test-subset picks from the test set, which --holdout replaces: give one of them");
}

}  // namespace psgd::train
