#include "engine/temporary_files.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <csignal>

namespace psgd {
namespace {

constexpr size_t kMaxPath = 4096;

// A registered path, which the signal handler may read on any thread while another thread
// registers a new path in the same slot: the path is atomic characters, and `version` (odd
// while the path is written) tells the handler whether what it copied is whole.
struct Slot {
  std::atomic<bool> taken{false}, live{false};
  std::atomic<unsigned> version{0};
  std::array<std::atomic<char>, kMaxPath> path{};
};
std::array<Slot, 8> slots;

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};

extern "C" void remove_and_reraise(int signal) {
  for (Slot& s : slots) {
    const unsigned before = s.version.load(std::memory_order_acquire);
    if ((before & 1) || !s.live.load(std::memory_order_acquire)) continue;
    char path[kMaxPath];
    for (size_t i = 0; i < kMaxPath; ++i) path[i] = s.path[i].load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.version.load(std::memory_order_relaxed) == before) ::unlink(path);  // async-signal-safe
  }
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

// The handler goes only where a signal has its default action (the process ending), checked at
// each registration: a handler installed since (MPI's, say) is left alone.
void install_handlers() {
  for (int signal : kSignals) {
    struct sigaction current {};
    if (::sigaction(signal, nullptr, &current) != 0 || current.sa_handler != SIG_DFL) continue;
    struct sigaction handler {};
    handler.sa_handler = remove_and_reraise;
    sigemptyset(&handler.sa_mask);
    ::sigaction(signal, &handler, nullptr);
  }
}

}  // namespace

TemporaryFileGuard::TemporaryFileGuard(const std::string& path) {
  install_handlers();
  if (path.size() >= kMaxPath) return;
  for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
    Slot& s = slots[i];
    bool expected = false;
    if (!s.taken.compare_exchange_strong(expected, true)) continue;
    s.version.fetch_add(1, std::memory_order_relaxed);  // odd: being written
    std::atomic_thread_fence(std::memory_order_release);
    for (size_t c = 0; c <= path.size(); ++c)
      s.path[c].store(path.c_str()[c], std::memory_order_relaxed);
    s.version.fetch_add(1, std::memory_order_release);
    s.live.store(true, std::memory_order_release);
    slot_ = i;
    return;
  }
}

TemporaryFileGuard::~TemporaryFileGuard() {
  if (slot_ < 0) return;
  slots[slot_].live.store(false, std::memory_order_release);
  slots[slot_].taken.store(false, std::memory_order_release);
}

}  // namespace psgd
