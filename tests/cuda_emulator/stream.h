// Work on the emulated GPU's stream: kernels, copies and library calls are issued here.
#pragma once

#include <functional>

namespace psgd::emu {

// Runs `work` now (device memory accessible while it runs), or records it when the calling host
// thread is capturing a graph.
void issue(std::function<void()> work);

// For calls a capture cannot record (synchronous ones): whether the calling host thread is
// capturing, in which case the capture is invalidated, as CUDA does, and the call must fail.
bool forbidden_in_capture();

}  // namespace psgd::emu
