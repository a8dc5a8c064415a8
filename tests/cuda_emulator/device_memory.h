// The emulated GPU's memory: every cudaMalloc is its own mapping, filled with 0xff bytes (NaN as
// floats) as real device memory holds whatever was there, and ending at an unmapped page (the
// buffer aligned to 16 bytes only), so a kernel reading or writing past the end of a buffer
// faults. While no device work runs, all of it is unreadable: host code that touches a device
// pointer faults as it would on a real GPU. A fault (a kernel's stack overflowing too) is
// reported as one line naming the address, and the process exits with kFaultExitStatus.
#pragma once

#include <cstddef>

namespace psgd::emu {

inline constexpr int kFaultExitStatus = 99;

// Puts the fault report in place for the calling host thread (a test framework may have replaced
// it since): done at every allocation and launch.
void report_faults();

void* device_allocate(size_t bytes);
// False for a pointer cudaMalloc did not return.
bool device_release(void* ptr);
// Whether [ptr, ptr + bytes) lies inside one live allocation.
bool is_device_range(const void* ptr, size_t bytes);
// Whether ptr lies inside any live allocation.
bool is_device_pointer(const void* ptr);
size_t device_bytes_in_use();

// A pointer argument of a kernel must be null or point into device memory, as a GPU can read
// nothing else (pointers inside other arguments, such as a lambda's captures, go unchecked).
void check_argument(const char* kernel, int position, const void* pointer);

// Device memory is readable and writable while one of these lives (on any host thread).
class DeviceAccess {
 public:
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

// Takes device memory away from the one DeviceAccess open until end() or destruction (for the
// first block of a programmatic dependent launch, until its threads wait for the grids before
// it); does nothing where more than one is open, and a second one opening ends it, as another
// host thread's device work needs the memory.
class DeviceAccessPause {
 public:
  DeviceAccessPause();
  ~DeviceAccessPause() { end(); }
  DeviceAccessPause(const DeviceAccessPause&) = delete;
  DeviceAccessPause& operator=(const DeviceAccessPause&) = delete;
  void end();

 private:
  bool paused_ = false;
};

}  // namespace psgd::emu
