// Training checkpoints: one safetensors file holding the network under its state_dict names
// (PyTorch loads it strictly once the "psgd." entries are dropped) and, under the "psgd." prefix,
// everything a resumed run needs to continue bit for bit: the optimizer's buffers and step
// count, the quantizer ranges and the dropout counters. The epoch, the best accuracies and the
// run's settings are in the metadata. Writes are atomic.
#pragma once

#include <map>
#include <string>

#include "engine/net.h"
#include "engine/optim.h"
#include "engine/safetensors.h"

namespace psgd {

inline constexpr const char* kStatePrefix = "psgd.";

struct TrainProgress {
  int64_t epoch = 0;  // the last epoch completed
  double best_fp = 0.0, best_lp = 0.0;
};

// A checkpoint's contents, copied from the device now; write() puts them in a file.
SafeTensorsWriter checkpoint_contents(const Net& net, const Optimizer& optimizer,
                                      const TrainProgress& progress,
                                      const std::map<std::string, std::string>& metadata);

// Loads the network and, when given, the optimizer state; checks the architecture and class
// count against the metadata. Returns the progress recorded (epoch 0 when absent).
TrainProgress load_checkpoint(const std::string& path, Net& net, Optimizer* optimizer);

}  // namespace psgd
