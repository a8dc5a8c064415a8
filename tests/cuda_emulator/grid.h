// Runs a launch's grid on the calling host thread: blocks one after another, each block's threads
// as fibers that a barrier or a warp shuffle suspends until the threads it waits for arrive.
#pragma once

#include <functional>

#include "tests/cuda_emulator/device_code.h"

namespace psgd::emu {

inline constexpr unsigned kMaxBlockThreads = 1024;  // CUDA's limit

// Throws std::logic_error naming the kernel for a divergent barrier or threads waiting at
// different barriers; rethrows a thread's exception.
void run_grid(const char* kernel, const LaunchConfig& config,
              const std::function<void()>& thread_body);

}  // namespace psgd::emu
