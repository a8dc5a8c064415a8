#include "engine/data_parallel.h"

#include <vector>

#include "engine/layers/batch_norm.h"

namespace psgd {

void synchronise_batch_norm(Net& net, Comm& comm) {
  for (Layer* layer : net.layers())
    if (auto* bn = dynamic_cast<BatchNorm*>(layer)) bn->synchronise_over(&comm);
}

void broadcast_buffers(Context& ctx, Comm& comm, Net& net) {
  if (comm.world() > 1 && net.params().buffers().numel() > 0)
    comm.broadcast(ctx, net.params().buffers(), 0);
}

void broadcast_state(Context& ctx, Comm& comm, Net& net, Optimizer& optimizer) {
  if (comm.world() == 1) return;
  comm.broadcast(ctx, net.params().weights(), 0);
  broadcast_buffers(ctx, comm, net);
  for (int i = 0; i < optimizer.state_count(); ++i) comm.broadcast(ctx, optimizer.state(i), 0);
}

void check_replicas_agree(Comm& comm, const Net& net, const Optimizer& optimizer) {
  if (comm.world() == 1) return;
  const Tensor w = net.params().weights();
  std::vector<float> host(static_cast<size_t>(w.numel()));
  memory_copy(host.data(), Device::CPU, w.data, w.device, w.bytes());
  // Two checksums, one weighted by position, so that swapped values show too.
  double sum = 0.0, weighted = 0.0;
  for (size_t i = 0; i < host.size(); ++i) {
    sum += host[i];
    weighted += host[i] * static_cast<double>(i % 1021 + 1);
  }
  check_ranks_agree(comm, std::vector<double>{sum, weighted}, "the weights");
  const std::vector<float> lo = optimizer.ranges().x_min(), hi = optimizer.ranges().x_max();
  std::vector<double> bounds(lo.begin(), lo.end());
  bounds.insert(bounds.end(), hi.begin(), hi.end());
  check_ranks_agree(comm, bounds, "the quantizer ranges");
}

uint64_t rank_seed(uint64_t seed, int rank) {
  return seed + static_cast<uint64_t>(rank) * 0x9E3779B97F4A7C15ull;
}

}  // namespace psgd
