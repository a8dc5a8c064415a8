// The racecheck build's annotations for ThreadSanitizer (see race_detector.h). This file is not
// instrumented itself: the scheduler's own bookkeeping is no CUDA thread's access.
#include "tests/cuda_emulator/race_detector.h"

#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <vector>

namespace psgd::emu::race {
namespace {

// One TSan fiber per thread slot, made as blocks first need them and reused by every block:
// block after block they are ordered anyway, and fibers are slow to make.
thread_local std::vector<void*> slot_fibers;
thread_local void* host_fiber = nullptr;
// Barrier n releases into and acquires from token n % 2: a thread leaving barrier n must not see
// what a faster thread did after it, before arriving at barrier n + 1.
thread_local char barrier_tokens[2];
thread_local char block_token;
thread_local char host_token;

}  // namespace

void enter_thread(unsigned slot, const ThreadCoords* starting) {
  if (!host_fiber) host_fiber = __tsan_get_current_fiber();
  while (slot_fibers.size() <= slot) slot_fibers.push_back(__tsan_create_fiber(0));
  void* fiber = slot_fibers[slot];
  if (starting) {
    const uint3 b = starting->block_idx, t = starting->thread_idx;
    char name[64];
    std::snprintf(name, sizeof name, "block (%u,%u,%u) thread (%u,%u,%u)", b.x, b.y, b.z, t.x, t.y,
                  t.z);
    __tsan_set_fiber_name(fiber, name);
  }
  __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync);
  if (starting) __tsan_acquire(&host_token);
}

void start_block() {
  // Each thread, starting, acquires what the host did before the block, earlier blocks included.
  // (A synchronising fiber switch would do, but orders nothing in GCC 12's ThreadSanitizer.)
  __tsan_release(&host_token);
}

void leave_thread() {
  __tsan_switch_to_fiber(host_fiber, __tsan_switch_to_fiber_no_sync);
}

void arrive_at_barrier(unsigned count) {
  __tsan_release(&barrier_tokens[count % 2]);
}

void leave_barrier(unsigned count) {
  __tsan_acquire(&barrier_tokens[count % 2]);
}

void thread_returned() {
  __tsan_release(&block_token);
}

void join_returned_threads() {
  __tsan_acquire(&block_token);
}

void prepare_fork() {
  for (void* fiber : slot_fibers) __tsan_destroy_fiber(fiber);
  slot_fibers.clear();
}

}  // namespace psgd::emu::race

// The first race ends the test process, which then fails with kRaceExitStatus.
static_assert(psgd::emu::race::kRaceExitStatus == 66);
extern "C" const char* __tsan_default_options() {
  return "halt_on_error=1:exitcode=66:history_size=4";
}

// The host's own threads are not checked: OpenMP's runtime is not instrumented, so
// ThreadSanitizer cannot see how its teams synchronise. Races with an access from a parallel
// region (an outlined "_omp_fn") or a thread OpenMP started are the CPU backend's business, as
// are those of its kernels (psgd::cpu), whose intercepted memsets in a team's thread may be
// reported without the parallel region's frame (the unwinder stops at optimised code).
extern "C" const char* __tsan_default_suppressions() {
  return "race:_omp_fn\nrace:libgomp.so\nrace:psgd::cpu::\n";
}
