#include "tests/cuda_emulator/device_memory.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace psgd::emu {
namespace {

// Less than cudaMalloc's 256 bytes, so that even a one-element overrun mostly reaches the guard
// page; psgd's kernels need 16 at most (vector loads).
constexpr size_t kAlignment = 16;

struct Mapping {
  char* base;     // of the mapping: the buffer's pages, then the guard page
  size_t length;  // without the guard page
  size_t bytes;   // asked for
};

struct Heap {
  std::mutex mutex;
  std::map<const char*, Mapping> live;  // by the pointer handed out
  size_t bytes_in_use = 0;
  int accessors = 0;    // DeviceAccess scopes open
  bool paused = false;  // a DeviceAccessPause holds the memory back from the one scope open
};

Heap& heap() {
  static Heap* h = new Heap;  // never destroyed: buffers may be freed during static destruction
  return *h;
}

size_t page_size() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

void protect(const Mapping& m, int prot) {
  mprotect(m.base, m.length, prot);
}

// Writes one line and exits (only async-signal-safe calls).
void report_fault(int, siginfo_t* info, void*) {
  static const char head[] = "cuda emulator: invalid memory access at 0x";
  static const char tail[] =
      " (past the end of a device buffer, host code touching device memory, a kernel touching it "
      "before await_prior_grids(), or a kernel's stack overflowing)\n";
  char line[sizeof head + 16 + sizeof tail];
  size_t n = 0;
  for (const char* c = head; *c; ++c) line[n++] = *c;
  char digits[16];
  int count = 0;
  for (auto a = reinterpret_cast<uintptr_t>(info->si_addr); count == 0 || a; a >>= 4)
    digits[count++] = "0123456789abcdef"[a & 15u];
  while (count) line[n++] = digits[--count];
  for (const char* c = tail; *c; ++c) line[n++] = *c;
  (void)!write(STDERR_FILENO, line, n);
  _exit(kFaultExitStatus);
}

// The live allocation holding p, or end().
std::map<const char*, Mapping>::const_iterator find(const Heap& h, const char* p) {
  auto it = h.live.upper_bound(p);
  if (it == h.live.begin()) return h.live.end();
  --it;
  return p < it->first + it->second.bytes ? it : h.live.end();
}

}  // namespace

void report_faults() {
  // Its own stack, so that a fiber's overflowed stack can still be reported.
  thread_local std::vector<char> signal_stack;
  if (signal_stack.empty()) {
    signal_stack.resize(64 * 1024);
    stack_t ss = {};
    ss.ss_sp = signal_stack.data();
    ss.ss_size = signal_stack.size();
    sigaltstack(&ss, nullptr);
  }
  struct sigaction action = {};
  action.sa_sigaction = report_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &action, nullptr);
}

void* device_allocate(size_t bytes) {
  report_faults();
  const size_t padded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  const size_t length = (padded + page_size() - 1) / page_size() * page_size();
  void* base = mmap(nullptr, length + page_size(), PROT_NONE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return nullptr;
  Mapping m{static_cast<char*>(base), length, bytes};
  char* data = m.base + length - padded;  // ends where the guard page starts
  Heap& h = heap();
  std::lock_guard lock(h.mutex);
  if (mprotect(m.base, length, PROT_READ | PROT_WRITE) != 0) {
    munmap(base, length + page_size());
    return nullptr;
  }
  std::memset(m.base, 0xff, length);
  if (h.accessors == 0 || h.paused) protect(m, PROT_NONE);
  h.live.emplace(data, m);
  h.bytes_in_use += bytes;
  return data;
}

bool device_release(void* ptr) {
  Heap& h = heap();
  std::lock_guard lock(h.mutex);
  const auto it = h.live.find(static_cast<const char*>(ptr));
  if (it == h.live.end()) return false;
  munmap(it->second.base, it->second.length + page_size());
  h.bytes_in_use -= it->second.bytes;
  h.live.erase(it);
  return true;
}

bool is_device_range(const void* ptr, size_t bytes) {
  Heap& h = heap();
  std::lock_guard lock(h.mutex);
  const char* p = static_cast<const char*>(ptr);
  const auto it = find(h, p);
  return it != h.live.end() && bytes <= it->second.bytes - static_cast<size_t>(p - it->first);
}

bool is_device_pointer(const void* ptr) {
  return is_device_range(ptr, 1);
}

void check_argument(const char* kernel, int position, const void* pointer) {
  if (pointer && !is_device_pointer(pointer))
    throw std::logic_error(std::string("cuda emulator: kernel ") + kernel + ": argument " +
                           std::to_string(position + 1) + " points outside device memory");
}

size_t device_bytes_in_use() {
  Heap& h = heap();
  std::lock_guard lock(h.mutex);
  return h.bytes_in_use;
}

DeviceAccess::DeviceAccess() {
  Heap& h = heap();
  std::lock_guard lock(h.mutex);
  // A second scope (another host thread's device work) ends a pause: it needs the memory.
  if (h.accessors++ == 0 || h.paused)
    for (const auto& [data, m] : h.live) protect(m, PROT_READ | PROT_WRITE);
  h.paused = false;
}

DeviceAccess::~DeviceAccess() {
  Heap& h = heap();
  std::lock_guard lock(h.mutex);
  if (--h.accessors == 0) {
    for (const auto& [data, m] : h.live) protect(m, PROT_NONE);
    h.paused = false;
  }
}

DeviceAccessPause::DeviceAccessPause() {
  Heap& h = heap();
  std::lock_guard lock(h.mutex);
  if (h.accessors != 1 || h.paused) return;
  for (const auto& [data, m] : h.live) protect(m, PROT_NONE);
  h.paused = paused_ = true;
}

void DeviceAccessPause::end() {
  if (!paused_) return;
  paused_ = false;
  Heap& h = heap();
  std::lock_guard lock(h.mutex);
  if (!h.paused) return;  // ended by a second DeviceAccess
  for (const auto& [data, m] : h.live) protect(m, PROT_READ | PROT_WRITE);
  h.paused = false;
}

}  // namespace psgd::emu
