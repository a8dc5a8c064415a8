// The CUDA graphs of a step (training or evaluation), one per batch size. A graph holds the
// addresses it was recorded with: the batch's images and labels, the network's activation memory
// and the context's workspace. It is replayed only while they all stay where they were, and
// captured anew otherwise.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>

#include "engine/captured_graph.h"
#include "engine/net.h"

namespace psgd {

class StepGraphs {
 public:
  // Replays the graph of this batch size if there is one and its addresses still hold; false
  // (nothing launched) otherwise.
  bool replay(Context& ctx, const Net& net, const Tensor& images, const Tensor& labels);
  // Records `work`, which must neither allocate nor wait for the device, as the graph of this
  // batch size, then replays it: capturing runs nothing.
  void capture_and_replay(Context& ctx, const Net& net, const Tensor& images, const Tensor& labels,
                          const std::function<void()>& work);
  // True the first time a batch size is asked about here (each step has its own StepGraphs):
  // such a batch runs op by op,
  // so that whatever is set up on first use (kernels loaded lazily, the libraries' first-call
  // work, NCCL's connections) happens outside any capture, a resumed run's first step too.
  bool first_of_size(int64_t batch) { return sizes_seen_.insert(batch).second; }
  // Steps replayed from an earlier capture so far.
  int64_t replays() const { return replays_; }

 private:
  struct Recorded {
    CapturedGraph graph;
    const void* images;
    const void* labels;
    uint64_t net_memory, workspace;
    bool holds(const Context& ctx, const Net& net, const Tensor& images_now,
               const Tensor& labels_now) const;
  };
  std::map<int64_t, Recorded> graphs_;  // by batch size
  std::set<int64_t> sizes_seen_;
  int64_t replays_ = 0;
};

}  // namespace psgd
