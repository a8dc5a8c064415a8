// What the racecheck build (PSGD_CUDA=EMULATE with PSGD_CUDA_RACECHECK=ON) tells ThreadSanitizer:
// which CUDA thread runs (each thread slot of a block is a TSan fiber) and where CUDA orders
// memory between threads, so that two accesses to one address, at least one a write, that no
// barrier orders are reported as a data race naming both source lines: what compute-sanitizer's
// racecheck finds on a GPU. Blocks are ordered one after another, as racecheck, which looks
// inside a block, assumes; warp shuffles exchange values and order no memory. Without racecheck
// these calls do nothing.
#pragma once

#include "tests/cuda_emulator/device_code.h"

namespace psgd::emu::race {

// How a test process stops at its first race report.
inline constexpr int kRaceExitStatus = 66;

#if PSGD_CUDA_RACECHECK
// Before the block's threads first run.
void start_block();
// Before resuming the thread in slot `slot` of the running block; `starting` at its first resume
// in this block (it then sees all that came before the block, and takes the name of `coords`).
void enter_thread(unsigned slot, const ThreadCoords* starting);
// Before a thread's fiber hands control back to the block's scheduler.
void leave_thread();
// A thread arriving at, and leaving, its `count`-th __syncthreads of the block.
void arrive_at_barrier(unsigned count);
void leave_barrier(unsigned count);
// A thread returning (or unwinding); the scheduler then sees all that the threads which have
// returned did: after each block, and before it rethrows a thread's exception.
void thread_returned();
void join_returned_threads();
// Before fork(): ThreadSanitizer stops ordering anything in a child forked from a process with
// more than one thread, and each fiber counts as one; they are made again as needed.
void prepare_fork();
#else
inline void start_block() {}
inline void enter_thread(unsigned, const ThreadCoords*) {}
inline void leave_thread() {}
inline void arrive_at_barrier(unsigned) {}
inline void leave_barrier(unsigned) {}
inline void thread_returned() {}
inline void join_returned_threads() {}
inline void prepare_fork() {}
#endif

}  // namespace psgd::emu::race
