#include "tests/cuda_emulator/grid.h"

#include <sys/mman.h>

#include <algorithm>
#include <boost/context/fiber.hpp>
#include <exception>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "tests/cuda_emulator/race_detector.h"
#include "tests/cuda_emulator/tf32.h"

namespace psgd::emu {
namespace {

namespace bc = boost::context;

constexpr unsigned kWarp = 32;
constexpr size_t kStackBytes = 32 * 1024;
constexpr size_t kGuardBytes = 4096;

// ---- Fiber stacks -------------------------------------------------------------------------------

// One stack per thread of a block, each above a guard page (an overflowing kernel faults instead
// of writing into its neighbour); made once per host thread and reused by every block.
class StackPool {
 public:
  StackPool() {
    bytes_ = kMaxBlockThreads * (kGuardBytes + kStackBytes);
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("cuda emulator: cannot map fiber stacks");
    memory_ = static_cast<char*>(p);
    for (unsigned i = 0; i < kMaxBlockThreads; ++i)
      mprotect(memory_ + i * (kGuardBytes + kStackBytes), kGuardBytes, PROT_NONE);
  }
  ~StackPool() { munmap(memory_, bytes_); }
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;

  // The top of stack i (stacks grow down).
  char* top(unsigned i) const { return memory_ + (i + 1) * (kGuardBytes + kStackBytes); }

 private:
  char* memory_ = nullptr;
  size_t bytes_ = 0;
};

// A boost.context stack allocator handing out one slot of the pool.
struct PoolSlot {
  char* top;
  bc::stack_context allocate() const {
    bc::stack_context sc;
    sc.size = kStackBytes;
    sc.sp = top;
    return sc;
  }
  void deallocate(bc::stack_context&) const noexcept {}
};

// ---- Blocks -------------------------------------------------------------------------------------

enum class Wait { None, Block, Warp, PriorGrids, Done };

struct Thread {
  ThreadCoords coords;
  bc::fiber fiber;      // resumes this thread
  bc::fiber scheduler;  // returns to the block's loop
  Wait wait = Wait::None;
  bool started = false;
  unsigned barriers = 0;  // passed in this block
  bool awaited = false;   // called await_prior_grids()
  // A warp exchange: the lanes it names, this lane's value, the lane it reads and what it got.
  unsigned warp_mask = 0;
  uint64_t sent = 0, received = 0;
  unsigned source = 0;
  float mma_operands[6] = {};  // a warp matrix product's A (4) and B (2) fragments
  std::exception_ptr error;
};

struct Block {
  const char* kernel = "";
  std::vector<Thread> threads;
  std::vector<unsigned char> dynamic_shared;
  Thread* running = nullptr;
};

thread_local Block* current_block = nullptr;
// Device memory held back from a programmatic dependent launch's first block until it waits.
thread_local DeviceAccessPause* memory_held_back = nullptr;

[[noreturn]] void fail(const Block& b, const std::string& what) {
  throw std::logic_error(std::string("cuda emulator: kernel ") + b.kernel + ": " + what);
}

void suspend(Thread& t) {
  race::leave_thread();
  t.scheduler = std::move(t.scheduler).resume();
}

unsigned slot_of(const Block& b, const Thread& t) {
  return static_cast<unsigned>(&t - b.threads.data());
}

void resume(Block& b, Thread& t) {
  b.running = &t;
  current_thread = &t.coords;
  race::enter_thread(slot_of(b, t), t.started ? nullptr : &t.coords);
  t.started = true;
  t.fiber = std::move(t.fiber).resume();
  current_thread = nullptr;
  if (t.error) {
    race::join_returned_threads();
    std::rethrow_exception(t.error);
  }
}

// Completes the warp exchanges all of whose lanes have arrived. As in CUDA, lanes of the mask
// that have returned (or do not exist in a partial warp) take no part; reading one, or a lane
// outside the mask, gives undefined bits: all ones here (a NaN, or -1).
bool release_warp(Block& b, size_t first, size_t lanes) {
  bool released = false;
  for (size_t l = 0; l < lanes; ++l) {
    const unsigned mask = b.threads[first + l].warp_mask;
    if (b.threads[first + l].wait != Wait::Warp) continue;
    unsigned group = 0;  // the mask's lanes still running
    bool all_here = true;
    for (unsigned m = 0; m < lanes; ++m) {
      const Thread& t = b.threads[first + m];
      if (!(mask >> m & 1u) || t.wait == Wait::Done) continue;
      group |= 1u << m;
      all_here &= t.wait == Wait::Warp && t.warp_mask == mask;
    }
    if (!all_here) continue;
    for (unsigned m = 0; m < lanes; ++m) {
      if (!(group >> m & 1u)) continue;
      Thread& t = b.threads[first + m];
      t.received = group >> t.source & 1u ? b.threads[first + t.source].sent : ~uint64_t{0};
      t.wait = Wait::None;
    }
    released = true;
  }
  return released;
}

// Releases the threads whose barrier every thread it waits for has reached. Returns false when
// all threads have returned; throws when no waiting thread can ever be released.
bool release_waiters(Block& b) {
  const size_t n = b.threads.size();
  size_t done = 0, at_block = 0, at_prior = 0;
  for (const Thread& t : b.threads) {
    done += t.wait == Wait::Done;
    at_block += t.wait == Wait::Block;
    at_prior += t.wait == Wait::PriorGrids;
  }
  if (done == n) return false;
  bool released = false;
  if (at_block > 0 && at_block + done == n) {
    if (done > 0)
      fail(b, std::to_string(done) + " threads returned while " + std::to_string(at_block) +
                  " wait at __syncthreads (a divergent barrier)");
    for (Thread& t : b.threads) t.wait = Wait::None;
    released = true;
  }
  if (at_prior > 0 && at_prior + done == n) {  // a dependent launch's first block, all waiting
    memory_held_back->end();
    memory_held_back = nullptr;
    for (Thread& t : b.threads)
      if (t.wait == Wait::PriorGrids) t.wait = Wait::None;
    released = true;
  }
  for (size_t first = 0; first < n; first += kWarp)
    released |= release_warp(b, first, std::min<size_t>(kWarp, n - first));
  if (!released) {
    std::ostringstream what;
    what << "threads wait at different barriers (" << at_block << " at __syncthreads, " << at_prior
         << " at await_prior_grids, " << n - done - at_block - at_prior << " at warp shuffles, "
         << done << " returned)";
    fail(b, what.str());
  }
  return true;
}

void run_block(Block& b, const StackPool& stacks, const LaunchConfig& c, const uint3& block_idx,
               const std::function<void()>& body) {
  const dim3 bd = c.block;
  unsigned i = 0;
  for (unsigned z = 0; z < bd.z; ++z)
    for (unsigned y = 0; y < bd.y; ++y)
      for (unsigned x = 0; x < bd.x; ++x, ++i) {
        Thread& t = b.threads[i];
        t.coords = {{x, y, z}, block_idx, c.block, c.grid, i % kWarp};
        t.wait = Wait::None;
        t.started = false;
        t.barriers = 0;
        t.awaited = false;
        t.error = nullptr;
        t.fiber = bc::fiber(std::allocator_arg, PoolSlot{stacks.top(i)},
                            [&t, &body](bc::fiber&& scheduler) {
                              t.scheduler = std::move(scheduler);
                              try {
                                body();
                              } catch (const bc::detail::forced_unwind&) {
                                // The host frees the exception that unwinds this fiber.
                                race::thread_returned();
                                race::leave_thread();
                                race::join_returned_threads();
                                throw;
                              } catch (...) {
                                t.error = std::current_exception();
                              }
                              t.wait = Wait::Done;
                              race::thread_returned();
                              race::leave_thread();
                              return std::move(t.scheduler);
                            });
      }
  std::fill(b.dynamic_shared.begin(), b.dynamic_shared.end(), 0xff);
  race::start_block();
  do {
    for (Thread& t : b.threads)
      if (t.wait == Wait::None) resume(b, t);
  } while (release_waiters(b));
  race::join_returned_threads();
  if (!c.dependent) return;
  for (const Thread& t : b.threads)
    if (!t.awaited)
      fail(b, "thread " + std::to_string(slot_of(b, t)) +
                  " returned without await_prior_grids(): launched as a programmatic dependent, "
                  "it may run before the kernels ahead of it end");
}

// After a failed block: unwinds the threads still suspended, those that ran on their own fiber.
void unwind_block(Block& b) {
  for (Thread& t : b.threads) {
    if (t.fiber && t.started) race::enter_thread(slot_of(b, t), nullptr);
    t.fiber = {};
  }
  race::join_returned_threads();
}

}  // namespace

void sync_block() {
  Thread& t = *current_block->running;
  t.wait = Wait::Block;
  race::arrive_at_barrier(t.barriers);
  suspend(t);
  race::leave_barrier(t.barriers++);
}

void warp_exchange(unsigned mask, const void* mine, void* theirs, unsigned source, size_t bytes) {
  Block& b = *current_block;
  Thread& t = *b.running;
  if (!(mask >> t.coords.lane & 1u))
    fail(b, "lane " + std::to_string(t.coords.lane) + " shuffles with a mask that leaves it out");
  t.sent = 0;
  std::memcpy(&t.sent, mine, bytes);
  t.source = source;
  t.wait = Wait::Warp;
  t.warp_mask = mask;
  suspend(t);
  std::memcpy(theirs, &t.received, bytes);
}

namespace {

// Waits until every lane of the calling thread's warp is here; fails where one has returned or
// the warp is partial (mma.sync needs all 32 lanes).
void warp_barrier(const char* what) {
  Block& b = *current_block;
  const size_t first = slot_of(b, *b.running) / kWarp * kWarp;
  if (b.threads.size() - first < kWarp) fail(b, std::string(what) + " in a partial warp");
  // Each lane reads the next one's mark: a lane that has returned gives all-ones bits instead.
  const unsigned next = (b.running->coords.lane + 1) % kWarp;
  const uint32_t here = 1;
  uint32_t there = 0;
  warp_exchange(~0u, &here, &there, next, sizeof here);
  if (there != here)
    fail(b, std::string(what) + " with lane " + std::to_string(next) + " returned");
}

float as_tf32_operand(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  u &= 0xffffe000u;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

}  // namespace

void warp_mma_m16n8k8_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
  Block& blk = *current_block;
  Thread& me = *blk.running;
  std::copy(a, a + 4, me.mma_operands);
  std::copy(b, b + 2, me.mma_operands + 4);
  warp_barrier("mma.sync");
  // Fragments (PTX ISA, m16n8k8 .tf32): lane = 4 g + t holds A[g][t], A[g+8][t], A[g][t+4],
  // A[g+8][t+4] and B[t][g], B[t+4][g]; its D elements are (g, 2t), (g, 2t+1), (g+8, 2t) and
  // (g+8, 2t+1).
  const Thread* warp = &blk.threads[slot_of(blk, me) / kWarp * kWarp];
  const auto A = [&](unsigned row, unsigned k) {
    return warp[4 * (row % 8) + k % 4].mma_operands[row / 8 + 2 * (k / 4)];
  };
  const auto B = [&](unsigned k, unsigned col) {
    return warp[4 * col + k % 4].mma_operands[4 + k / 4];
  };
  const unsigned g = me.coords.lane / 4, t = me.coords.lane % 4;
  for (unsigned e = 0; e < 4; ++e) {
    const unsigned row = g + 8 * (e / 2), col = 2 * t + e % 2;
    float sum = d[e];
    for (unsigned k = 0; k < 8; ++k) sum += as_tf32_operand(A(row, k)) * as_tf32_operand(B(k, col));
    d[e] = sum;
  }
  warp_barrier("mma.sync");  // no lane's next fragments overwrite these before all have read
}

float round_to_tf32(float v) {
  return to_tf32(v);
}

void* dynamic_shared_memory() {
  return current_block->dynamic_shared.data();
}

void await_prior_grids() {
  Thread& t = *current_block->running;
  t.awaited = true;
  if (!memory_held_back) return;
  // The first block's threads wait here for each other, so that each runs up to its wait with
  // device memory held back.
  t.wait = Wait::PriorGrids;
  suspend(t);
}

void run_grid(const char* kernel, const LaunchConfig& config,
              const std::function<void()>& thread_body) {
  if (current_block) throw std::logic_error("cuda emulator: kernels cannot launch kernels");
  report_faults();
  static thread_local StackPool stacks;
  Block b;
  b.kernel = kernel;
  b.threads.resize(static_cast<size_t>(config.block.x) * config.block.y * config.block.z);
  b.dynamic_shared.resize(config.shared_bytes);
  // Blocks in a shuffled order (fixed per launch number): a kernel must not depend on it.
  const dim3 g = config.grid;
  std::vector<uint32_t> order(static_cast<size_t>(g.x) * g.y * g.z);
  std::iota(order.begin(), order.end(), 0u);
  static thread_local uint64_t launches = 0;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(++launches));
  std::optional<DeviceAccessPause> pause;
  if (config.dependent) memory_held_back = &pause.emplace();
  current_block = &b;
  try {
    for (const uint32_t i : order)
      run_block(b, stacks, config, {i % g.x, i / g.x % g.y, i / g.x / g.y}, thread_body);
  } catch (...) {
    unwind_block(b);
    current_block = nullptr;
    memory_held_back = nullptr;
    throw;
  }
  current_block = nullptr;
  memory_held_back = nullptr;
}

}  // namespace psgd::emu
