// Work on the emulated GPU's stream: kernels, copies and library calls are issued here.
#pragma once

#include <functional>

namespace psgd::emu {

// Runs `work` now (device memory accessible while it runs), or records it when the calling host
// thread is capturing a graph.
void issue(std::function<void()> work);

}  // namespace psgd::emu
