#include "engine/step_graphs.h"

namespace psgd {

bool StepGraphs::Recorded::holds(const Context& ctx, const Net& net, const Tensor& images_now,
                                 const Tensor& labels_now) const {
  return images == images_now.data && labels == labels_now.data &&
         net_memory == net.memory_generation() && workspace == ctx.workspace_generation();
}

bool StepGraphs::replay(Context& ctx, const Net& net, const Tensor& images, const Tensor& labels) {
  const auto found = graphs_.find(images.shape[0]);
  if (found == graphs_.end() || !found->second.holds(ctx, net, images, labels)) return false;
  found->second.graph.replay(ctx);
  ++replays_;
  return true;
}

void StepGraphs::capture_and_replay(Context& ctx, const Net& net, const Tensor& images,
                                    const Tensor& labels, const std::function<void()>& work) {
  Recorded r{CapturedGraph::capture(ctx, work), images.data, labels.data, net.memory_generation(),
             ctx.workspace_generation()};
  r.graph.replay(ctx);
  graphs_.insert_or_assign(images.shape[0], std::move(r));
}

}  // namespace psgd
