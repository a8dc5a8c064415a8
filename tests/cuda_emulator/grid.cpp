#include "tests/cuda_emulator/grid.h"

#include <sys/mman.h>

#include <array>
#include <boost/context/fiber.hpp>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace psgd::emu {
namespace {

namespace bc = boost::context;

constexpr unsigned kWarp = 32;
constexpr unsigned kMaxBlockThreads = 1024;
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

enum class Wait { None, Block, Warp, Done };

struct Thread {
  ThreadCoords coords;
  bc::fiber fiber;      // resumes this thread
  bc::fiber scheduler;  // returns to the block's loop
  Wait wait = Wait::None;
  unsigned warp_mask = 0;  // the lanes of the exchange it waits at
  unsigned exchanges = 0;  // warp exchanges so far; their parity picks the slot buffer
  std::exception_ptr error;
};

struct Block {
  const char* kernel = "";
  std::vector<Thread> threads;
  std::vector<unsigned char> dynamic_shared;
  // Per warp, two buffers of one 8-byte slot per lane: consecutive exchanges alternate, so a lane
  // that has gone on to the next exchange cannot overwrite a value a slower lane still reads.
  std::vector<std::array<std::array<uint64_t, kWarp>, 2>> slots;
  Thread* running = nullptr;
};

thread_local Block* current_block = nullptr;

[[noreturn]] void fail(const Block& b, const std::string& what) {
  throw std::logic_error(std::string("cuda emulator: kernel ") + b.kernel + ": " + what);
}

void suspend(Thread& t) {
  t.scheduler = std::move(t.scheduler).resume();
}

void resume(Block& b, Thread& t) {
  b.running = &t;
  current_thread = &t.coords;
  t.fiber = std::move(t.fiber).resume();
  current_thread = nullptr;
  if (t.error) std::rethrow_exception(t.error);
}

// Releases the threads whose barrier every thread it waits for has reached. Returns false when
// all threads have returned; throws when no waiting thread can ever be released.
bool release_waiters(Block& b) {
  const size_t n = b.threads.size();
  size_t done = 0, at_block = 0;
  for (const Thread& t : b.threads) {
    done += t.wait == Wait::Done;
    at_block += t.wait == Wait::Block;
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
  for (size_t first = 0; first < n; first += kWarp) {
    const size_t lanes = std::min<size_t>(kWarp, n - first);
    for (size_t l = 0; l < lanes; ++l) {
      const Thread& waiter = b.threads[first + l];
      if (waiter.wait != Wait::Warp) continue;
      bool all_here = true;
      for (unsigned m = 0; m < kWarp; ++m) {
        if (!(waiter.warp_mask >> m & 1u)) continue;
        if (m >= lanes || b.threads[first + m].wait == Wait::Done)
          fail(b, "a warp shuffle of lane " + std::to_string(l) + " waits for lane " +
                      std::to_string(m) + ", which has returned or does not exist");
        all_here &= b.threads[first + m].wait == Wait::Warp &&
                    b.threads[first + m].warp_mask == waiter.warp_mask;
      }
      if (!all_here) continue;
      for (unsigned m = 0; m < kWarp; ++m)
        if (waiter.warp_mask >> m & 1u) b.threads[first + m].wait = Wait::None;
      released = true;
    }
  }
  if (!released) {
    std::ostringstream what;
    what << "threads wait at different barriers (" << at_block << " at __syncthreads, "
         << n - done - at_block << " at warp shuffles, " << done << " returned)";
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
        t.exchanges = 0;
        t.error = nullptr;
        t.fiber = bc::fiber(std::allocator_arg, PoolSlot{stacks.top(i)},
                            [&t, &body](bc::fiber&& scheduler) {
                              t.scheduler = std::move(scheduler);
                              try {
                                body();
                              } catch (const bc::detail::forced_unwind&) {
                                throw;
                              } catch (...) {
                                t.error = std::current_exception();
                              }
                              t.wait = Wait::Done;
                              return std::move(t.scheduler);
                            });
      }
  std::fill(b.dynamic_shared.begin(), b.dynamic_shared.end(), 0xff);
  do {
    for (Thread& t : b.threads)
      if (t.wait == Wait::None) resume(b, t);
  } while (release_waiters(b));
}

}  // namespace

void sync_block() {
  Thread& t = *current_block->running;
  t.wait = Wait::Block;
  suspend(t);
}

void warp_exchange(unsigned mask, const void* mine, void* theirs, unsigned source, size_t bytes) {
  Block& b = *current_block;
  Thread& t = *b.running;
  const unsigned lane = t.coords.lane;
  if (!(mask >> lane & 1u))
    fail(b, "lane " + std::to_string(lane) + " shuffles with a mask that leaves it out");
  const size_t warp = static_cast<size_t>(&t - b.threads.data()) / kWarp;
  auto& slots = b.slots[warp][t.exchanges++ & 1u];
  std::memcpy(&slots[lane], mine, bytes);
  t.wait = Wait::Warp;
  t.warp_mask = mask;
  suspend(t);
  if (!(mask >> source & 1u))
    fail(b, "lane " + std::to_string(lane) + " reads lane " + std::to_string(source) +
                ", which is not in the shuffle's mask");
  std::memcpy(theirs, &slots[source], bytes);
}

void* dynamic_shared_memory() {
  return current_block->dynamic_shared.data();
}

void run_grid(const char* kernel, const LaunchConfig& config,
              const std::function<void()>& thread_body) {
  static thread_local StackPool stacks;
  Block b;
  b.kernel = kernel;
  b.threads.resize(static_cast<size_t>(config.block.x) * config.block.y * config.block.z);
  b.dynamic_shared.resize(config.shared_bytes);
  b.slots.resize((b.threads.size() + kWarp - 1) / kWarp);
  Block* const outer = current_block;
  current_block = &b;
  try {
    for (unsigned z = 0; z < config.grid.z; ++z)
      for (unsigned y = 0; y < config.grid.y; ++y)
        for (unsigned x = 0; x < config.grid.x; ++x)
          run_block(b, stacks, config, {x, y, z}, thread_body);
  } catch (...) {
    current_block = outer;
    throw;
  }
  current_block = outer;
}

}  // namespace psgd::emu
