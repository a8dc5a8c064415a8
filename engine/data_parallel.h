// What data-parallel training adds to one rank's training: the same starting state on every
// rank, synchronised BN, and checks that the replicas have not drifted apart. Gradients are
// averaged by the trainer (one all-reduce over the flat gradient buffer per step).
#pragma once

#include "engine/comm.h"
#include "engine/net.h"
#include "engine/optim.h"

namespace psgd {

// Every BatchNorm layer of `net` sums its training statistics over the ranks of `comm`.
void synchronise_batch_norm(Net& net, Comm& comm);

// Rank 0's weights, BN buffers and optimizer state on every rank.
void broadcast_state(Context& ctx, Comm& comm, Net& net, Optimizer& optimizer);

// Rank 0's BN running statistics on every rank: per-replica BN lets them differ, and the model
// evaluated and saved must be one model.
void broadcast_buffers(Context& ctx, Comm& comm, Net& net);

// Throws unless every rank holds the same weights and quantizer ranges (bit for bit).
void check_replicas_agree(Comm& comm, const Net& net, const Optimizer& optimizer);

// The dropout seed of a rank: rank 0 keeps the run's seed, so one rank trains as without a job.
uint64_t rank_seed(uint64_t seed, int rank);

}  // namespace psgd
