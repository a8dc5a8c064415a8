// The epoch loop of the reference: train an epoch, evaluate the float (FP) and the
// low-precision (LP) network on the test set, print a line, append a metrics row, write
// checkpoints. Knows nothing of files' formats beyond checkpoints, nor of devices.
#pragma once

#include <map>
#include <ostream>
#include <string>

#include "engine/batch_source.h"
#include "engine/checkpoint_writer.h"
#include "engine/comm.h"
#include "engine/evaluator.h"
#include "engine/schedule.h"
#include "engine/train_state.h"
#include "engine/train_step.h"

namespace psgd {

struct TrainerConfig {
  int64_t first_epoch = 1, last_epoch = 1;
  LrSchedule schedule;
  std::string out_dir;  // metrics.jsonl and checkpoints; empty writes nothing
  // The job's ranks (null: a single rank). Gradients are averaged over them at every step;
  // only rank 0 logs and writes.
  Comm* comm = nullptr;
  std::map<std::string, std::string> metadata;  // recorded in every checkpoint
  std::ostream* log = nullptr;                  // epoch lines; null is silent
  bool interactive = false;  // refresh a progress line (a terminal) or print plain lines
};

class Trainer {
 public:
  Trainer(Context& ctx, Net& net, Optimizer& optimizer, BatchSource& train, BatchSource& test,
          TrainerConfig config, TrainProgress progress = {});
  // Runs the remaining epochs and returns once every checkpoint is on disk (each epoch's is
  // written in the background while the next one trains). Stops with a psgd::Error on a
  // non-finite loss or a failed write, leaving the last good checkpoint in place.
  TrainProgress run();

 private:
  struct EpochStats {
    double loss = 0.0, accuracy = 0.0, images_per_second = 0.0;
  };
  void run_epochs();
  EpochStats train_epoch(int64_t epoch);
  void record(int64_t epoch, float lr, const EpochStats& train, const EvalResult& fp,
              const EvalResult& lp, double seconds, bool fp_best, bool lp_best);

  Context& ctx_;
  Net& net_;
  Optimizer& optimizer_;
  BatchSource& train_;
  BatchSource& test_;
  TrainerConfig config_;
  TrainProgress progress_;
  Comm& comm_;
  TrainStep step_;
  Evaluator evaluator_;
  CheckpointWriter checkpoints_;
  bool quantized_;
};

}  // namespace psgd
