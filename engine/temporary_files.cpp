#include "engine/temporary_files.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <csignal>
#include <cstring>

namespace psgd {
namespace {

// A path the signal handler may read: `live` is set after the path is written and cleared before
// the slot is given back, so the handler never reads a path being written.
struct Slot {
  std::atomic<bool> taken{false}, live{false};
  char path[4096] = {};
};
std::array<Slot, 8> slots;

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};

extern "C" void remove_and_reraise(int signal) {
  for (Slot& s : slots)
    if (s.live.load(std::memory_order_acquire)) ::unlink(s.path);  // async-signal-safe
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
  if (path.size() >= sizeof(Slot::path)) return;
  for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
    bool expected = false;
    if (!slots[i].taken.compare_exchange_strong(expected, true)) continue;
    std::memcpy(slots[i].path, path.c_str(), path.size() + 1);
    slots[i].live.store(true, std::memory_order_release);
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
