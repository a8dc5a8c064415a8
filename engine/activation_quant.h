// Quantized activations for evaluation: every ReLU of a network quantizes its output, with its
// range either running over the evaluation batches or clipped, before evaluation, to
// max over channels of (beta + n * gamma) of the BatchNorm that precedes it.
#pragma once

#include "engine/net.h"

namespace psgd {

enum class ActivationRange : uint8_t { Running, Clipped };

struct ActivationQuantConfig {
  int bits = 0;  // 0 (or 32): float activations
  ActivationRange range = ActivationRange::Running;
  float clip_n = 6.0f;  // Clipped: the range is beta + clip_n * gamma
};

struct ActivationQuantSummary {
  int clipped = 0;  // ReLUs with a clipped range
  int running = 0;  // ReLUs with a running range (by choice, or with no BN before them)
};

ActivationQuantSummary set_activation_quant(Net& net, const ActivationQuantConfig& config);

}  // namespace psgd
