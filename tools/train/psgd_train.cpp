// psgd-train: trains a reference network on CIFAR-format data with PSGD (or plain SGD with
// --lambda-s 0), evaluating the float (FP) and low-precision (LP) network after every epoch.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "data/dataset.h"
#include "data/fingerprint.h"
#include "data/loader.h"
#include "engine/comm.h"
#include "engine/data_parallel.h"
#include "engine/safetensors.h"
#include "engine/trainer.h"
#include "nets/nets.h"
#include "nets/quant_config.h"
#include "tools/cli_support.h"
#include "tools/train/train_options.h"

using namespace psgd;
using namespace psgd::train;
namespace fs = std::filesystem;

namespace {

// The CPU, or the GPU of this rank (--gpu alone; the local rank's in a job), made current.
Device pick_device(const TrainOptions& o, const Comm& comm) {
  if (o.device == "cpu") return Device::CPU;
  if (!cuda_available()) {
    PSGD_CHECK(o.device != "cuda", "--device cuda: no GPU is visible to this process",
               cuda_built() ? "" : " (and this build has no CUDA backend)");
    if (comm.rank() == 0) std::cout << "note: no GPU found; training on the CPU\n";
    return Device::CPU;
  }
  if (comm.world() > 1 && cuda_device_count() > 1) {
    // NCCL refuses two ranks on one GPU ("duplicate GPU"): say so before it does. (A launcher
    // that gives each rank its own GPU leaves each seeing one device: that one is taken.)
    PSGD_CHECK(comm.local_rank() < cuda_device_count(), "rank ", comm.rank(), " is local rank ",
               comm.local_rank(), " on a node with ", cuda_device_count(),
               " GPUs: start at most one rank per GPU on each node");
    cuda_select_device(comm.local_rank());
  } else {
    cuda_select_device(comm.world() > 1 ? 0 : o.gpu);
  }
  return Device::CUDA;
}

bool is_resumable(const std::string& option) {
  return std::find(std::begin(kResumableOptions), std::end(kResumableOptions), option) !=
         std::end(kResumableOptions);
}

// Whether `option`, given again with --resume, has the value the run recorded: its config.json
// key is its long name with underscores (--w-bits: w_bits).
bool same_as_recorded(const std::string& option, const nlohmann::json& given,
                      const nlohmann::json& recorded) {
  if (option == "--adam") return recorded.value("optimizer", "") == "adam";
  std::string key = option.substr(2);
  std::replace(key.begin(), key.end(), '-', '_');
  return given.contains(key) && recorded.contains(key) && given[key] == recorded[key];
}

TrainOptions resumed_options(const std::string& dir, const CLI::App& app,
                             const TrainOptions& given) {
  const fs::path config = fs::path(dir) / "config.json";
  PSGD_CHECK(fs::exists(config), "--resume ", dir,
             ": no config.json (not a psgd-train output folder)");
  TrainOptions o;
  try {
    o = nlohmann::json::parse(std::ifstream(config)).get<TrainOptions>();
  } catch (const nlohmann::json::exception& e) {
    PSGD_FAIL(config.string(), ": unreadable (", e.what(), ")");
  }
  const nlohmann::json recorded = o, wanted = given;
  for (const CLI::Option* option : app.get_options()) {
    const std::string name = option->get_name();
    if (option->count() == 0 || is_resumable(name) || same_as_recorded(name, wanted, recorded))
      continue;
    PSGD_CHECK(name != "--overwrite",
               "--overwrite starts a new run and --resume continues one: give one of them");
    PSGD_FAIL("--resume continues the run as ", config.string(), " records it: ", name,
              " cannot change (only --epochs, --data, --threads, --device and --gpu may)");
  }
  if (app.count("--epochs")) o.epochs = given.epochs;  // extend the run
  if (app.count("--data")) o.data = given.data;        // the same images, moved
  if (app.count("--threads")) o.threads = given.threads;
  if (app.count("--device")) o.device = given.device;
  if (app.count("--gpu")) o.gpu = given.gpu;
  o.out = dir;
  o.init.clear();  // where the run started: a resumed run continues from its own checkpoint
  return o;
}

// A new run in a folder that holds one must say that it replaces it.
void check_fresh_out(const TrainOptions& o, const Invocation& invocation) {
  const fs::path last = fs::path(o.out) / "last.safetensors";
  PSGD_CHECK(!fs::exists(last) || invocation.overwrite, "--out ", o.out,
             " holds a run (last.safetensors): continue it with --resume ", o.out,
             ", or replace it with --overwrite (or give another --out)");
}

int train(TrainOptions& o, const Invocation& invocation, Context& ctx, Comm& comm);

// Ends every rank of a job now, through the communicator in use (NCCL aborts its kernels first):
// unwinding further would wait on collectives the others may never finish.
[[noreturn]] void abort_ranks(Comm& comm, const std::exception& e) {
  comm.abort("psgd-train rank " + std::to_string(comm.rank()) + ": " + user_message(e));
  std::abort();  // not reached (Comm::abort does not return; the compiler cannot see through it)
}

int run(TrainOptions o, const Invocation& invocation, const CLI::App& app, Comm& job) {
  if (!invocation.resume.empty()) o = resumed_options(invocation.resume, app, o);
  if (o.out.empty()) o.out = "runs/" + o.arch;
  validate(o, job.world());
  PSGD_CHECK(o.schedule != "cosine" || !app.count("--decay-epochs"),
             "--decay-epochs sets the multistep schedule's milestones; --schedule cosine has none");
  if (invocation.resume.empty()) {
    validate_new_run(o);
    check_fresh_out(o, invocation);
    o.data = fs::absolute(o.data).string();  // so that --resume finds it from any folder
    if (!o.init.empty()) o.init = fs::absolute(o.init).string();
  }
  Context ctx(pick_device(o, job), o.threads, rank_seed(o.seed, job.rank()),
              {.tf32 = !o.strict_fp32, .deterministic = o.deterministic, .bf16 = o.bf16});
  // GPU ranks exchange device tensors through NCCL; CPU ranks use the job's MPI ranks.
  PSGD_CHECK(!o.nccl || ctx.device() == Device::CUDA, "--nccl needs a GPU, and none is visible");
  std::unique_ptr<Comm> gpu_ranks;
  if (ctx.device() == Device::CUDA && (job.world() > 1 || o.nccl))
    gpu_ranks = make_nccl_comm(job, ctx);
  Comm& comm = gpu_ranks ? *gpu_ranks : job;
  try {
    return train(o, invocation, ctx, comm);
  } catch (const std::exception& e) {
    if (comm.world() == 1) throw;
    abort_ranks(comm, e);
  }
}

int train(TrainOptions& o, const Invocation& invocation, Context& ctx, Comm& comm) {
  const bool leader = comm.rank() == 0;
  const std::string& resume = invocation.resume;

  const data::DatasetOptions dopts{data::parse_format(o.dataset), o.coarse};
  data::Dataset train_set = data::load_dataset(o.data, data::Split::Train, dopts);
  data::Dataset test_set =
      o.holdout > 0 ? data::Dataset{} : data::load_dataset(o.data, data::Split::Test, dopts);
  // A resumed run must see the images it trained on; --data may have moved them.
  const std::string images =
      o.holdout > 0 ? data::fingerprint({&train_set}) : data::fingerprint({&train_set, &test_set});
  if (resume.empty())
    o.data_fingerprint = images;
  else
    PSGD_CHECK(o.data_fingerprint.empty() || o.data_fingerprint == images, "--resume ", o.out, ": ",
               o.data, " holds other images than the run trained on (", images,
               "; the run's: ", o.data_fingerprint, ")");
  for (data::Dataset* d : {&train_set, &test_set}) {
    if (!o.norm_mean.empty())
      std::copy(o.norm_mean.begin(), o.norm_mean.end(), d->norm.mean.begin());
    if (!o.norm_std.empty()) std::copy(o.norm_std.begin(), o.norm_std.end(), d->norm.std.begin());
  }
  data::RunSamples samples = data::choose_samples(
      train_set.size(), test_set.size(),
      {.holdout = o.holdout, .train_subset = o.train_subset, .test_subset = o.test_subset}, o.seed);
  const data::Dataset& eval_set = o.holdout > 0 ? train_set : test_set;
  // On a GPU the datasets live in device memory and batches are augmented there.
  const auto train = data::make_loader(train_set,
                                       {.batch_size = o.batch_size,
                                        .shuffle = !o.no_shuffle,
                                        .augment = !o.no_augment,
                                        .drop_last = o.drop_last,
                                        .seed = o.seed,
                                        .rank = comm.rank(),
                                        .world = comm.world()},
                                       std::move(samples.train), ctx.device());
  const auto test = data::make_loader(eval_set,
                                      {.batch_size = o.eval_batch_size,
                                       .shuffle = false,
                                       .augment = false,
                                       .rank = comm.rank(),
                                       .world = comm.world()},
                                      std::move(samples.evaluation), ctx.device());
  // Every rank holds an equal share of every batch: the gradient mean over ranks is then the
  // global batch's, and synchronised BN counts the shares as equal.
  const int64_t last_batch = train->samples() % o.batch_size;
  PSGD_CHECK(o.drop_last || last_batch % comm.world() == 0, "the last training batch of ",
             last_batch, " images does not split evenly over ", comm.world(),
             " ranks; add --drop-last or choose --train-subset");

  auto net = make_net(o.arch, train_set.classes, ctx.device(), o.seed);
  assign_quantizers(net->params(),
                    {.w_bits = o.w_bits,
                     .first_last = o.first_last_quant,
                     .psg = o.lambda_s > 0,
                     .target = o.target == "zero" ? QuantTarget::Zero : QuantTarget::Grid});
  Optimizer optimizer(net->params(),
                      {.kind = o.optimizer == "adam" ? OptimizerKind::Adam : OptimizerKind::Sgd,
                       .momentum = o.momentum,
                       .weight_decay = o.effective_weight_decay(),
                       .lambda_s = o.lambda_s});
  if (o.sync_bn && comm.world() > 1) synchronise_batch_norm(*net, comm);  // alone, it is plain BN
  TrainProgress progress;
  const fs::path last = fs::path(o.out) / "last.safetensors";
  if (!resume.empty()) {
    PSGD_CHECK(fs::exists(last), "--resume ", resume, ": no last.safetensors to continue from");
    progress = load_checkpoint(last.string(), *net, &optimizer);
    if (leader) std::cout << "resuming " << o.out << " after epoch " << progress.epoch << "\n";
  } else {
    if (!o.init.empty()) {
      progress.epoch = load_checkpoint(o.init, *net, nullptr).epoch;
      if (leader) std::cout << "starting from " << o.init << " (epoch " << progress.epoch << ")\n";
    }
    o.first_epoch = static_cast<int>(progress.epoch) + 1;
  }
  if (progress.epoch >= o.epochs) {
    if (leader)
      std::cout << "nothing to train: " << (resume.empty() ? o.init : o.out) << " is at epoch "
                << progress.epoch << " and --epochs is " << o.epochs
                << " (give a later --epochs to train on)\n";
    return 0;
  }
  broadcast_state(ctx, comm, *net, optimizer);  // every rank starts from rank 0's state
  if (resume.empty() && leader) {
    fs::create_directories(o.out);
    // A replaced run's files go first: its best_lp.safetensors or its rows could outlive it.
    for (const char* name :
         {"last.safetensors", "best_fp.safetensors", "best_lp.safetensors", "metrics.jsonl"})
      fs::remove(fs::path(o.out) / name);
    const std::string config = nlohmann::json(o).dump(2) + "\n";
    write_file_atomic((fs::path(o.out) / "config.json").string(),
                      {reinterpret_cast<const std::byte*>(config.data()),
                       reinterpret_cast<const std::byte*>(config.data() + config.size())});
  }

  if (leader && (comm.world() > 1 || o.nccl))
    std::cout << comm.world() << (comm.world() == 1 ? " rank (" : " ranks (") << comm.backend()
              << "), global batch " << o.batch_size << ", "
              << (o.sync_bn ? "synchronised" : "per-rank") << " BN\n";
  if (leader)
    std::cout << net->arch() << " on " << train_set.name << " (" << train->samples()
              << " training, " << test->samples() << (o.holdout > 0 ? " held-out" : " test")
              << " images, " << train_set.classes << " classes), " << device_name(ctx.device())
              << " with " << ctx.threads() << " threads; W" << o.w_bits
              << (o.first_last_quant ? " first/last quantized" : "") << ", lambda_s " << o.lambda_s
              << ", " << o.optimizer << " lr " << o.effective_lr() << "\n";
  TrainerConfig tc;
  tc.first_epoch = progress.epoch + 1;
  tc.last_epoch = o.epochs;
  tc.schedule = {
      .kind = o.schedule == "cosine" ? LrSchedule::Kind::Cosine : LrSchedule::Kind::MultiStep,
      .base_lr = o.effective_lr(),
      .milestones = o.decay_epochs,
      .gamma = o.gamma,
      .first_epoch = o.first_epoch,
      .last_epoch = std::max(o.epochs, o.first_epoch),
      .warmup_epochs = o.warmup_epochs};
  tc.out_dir = o.out;
  tc.metadata = {{"w_bits", std::to_string(o.w_bits)},
                 {"a_bits", std::to_string(o.a_bits)},
                 {"lambda_s", std::to_string(o.lambda_s)},
                 {"first_last_quant", o.first_last_quant ? "1" : "0"},
                 {"dataset", train_set.name},
                 {"seed", std::to_string(o.seed)}};
  tc.log = &std::cout;
  tc.interactive = isatty(fileno(stdout)) && !launched_by_mpi();  // mpirun relays through a pty
  tc.comm = &comm;
  Trainer trainer(ctx, *net, optimizer, *train, *test, tc, progress);
  TrainProgress done;
  try {
    done = trainer.run();
  } catch (const std::exception& e) {
    // Now, while the network and the loaders still hold their device memory: freeing it waits for
    // the device, which may wait on a collective.
    if (comm.world() > 1) abort_ranks(comm, e);
    throw;
  }
  if (leader)
    std::cout << "done: best FP " << 100 * done.best_fp << "%, best LP " << 100 * done.best_lp
              << "%; checkpoints, config.json and metrics.jsonl in " << o.out << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  TrainOptions options;
  Invocation invocation;
  CLI::App app{
      "Train a CIFAR network with PSGD (Position-based Scaled Gradient); --lambda-s 0 is plain "
      "SGD"};
  add_options(app, options, invocation);
  tools::one_line_errors(app, "psgd-train");
  CLI11_PARSE(app, argc, argv);
  std::unique_ptr<Comm> job;
  try {
    job = join_job();
    return run(options, invocation, app, *job);
  } catch (const std::exception& e) {
    if (!job || job->world() == 1) {
      std::cerr << "psgd-train: " << user_message(e) << std::endl;
      return 1;
    }
    // Take the other ranks down with this one: they would wait for it in the next collective.
    job->abort("psgd-train rank " + std::to_string(job->rank()) + ": " + user_message(e));
  }
}
