// A sequence of a context's GPU work recorded once (CUDA graph capture) and replayed with a
// single launch. Capturing records the kernels without running them; replay runs them with the
// arguments and addresses they were recorded with.
#pragma once

#include <functional>
#include <memory>

#include "engine/context.h"

namespace psgd {

class CapturedGraph {
 public:
  CapturedGraph() = default;
  // Records everything `work` launches on ctx's stream (a CUDA context).
  static CapturedGraph capture(const Context& ctx, const std::function<void()>& work);
  void replay(const Context& ctx) const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace psgd
