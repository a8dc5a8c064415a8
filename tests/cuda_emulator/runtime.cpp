// The part of the CUDA runtime psgd calls, for the emulated GPU (one device, all work done on the
// calling host thread before the call returns). It is stricter than a real GPU where psgd's
// rules need it: copies whose pointers do not match their direction fail, and during a graph
// capture anything a real capture forbids (synchronous copies, allocation, synchronisation)
// fails and invalidates the capture. Kernels and asynchronous copies issued while capturing are
// recorded with their arguments and run at each graph launch.
#include <cuda_profiler_api.h>

#include <cstring>
#include <memory>
#include <vector>

#include "tests/cuda_emulator/device_memory.h"
#include "tests/cuda_emulator/grid.h"
#include "tests/cuda_emulator/stream.h"

struct CUgraph_st {
  std::vector<std::function<void()>> work;  // in capture order
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};

namespace psgd::emu {
namespace {

constexpr size_t kDeviceBytes = size_t{16} << 30;  // what cudaMemGetInfo reports as total
constexpr size_t kMaxSharedBytes = 48 * 1024;      // without an opt-in

// CUDA keeps the last error, and the capture mode used here, per host thread.
thread_local cudaError_t last_error = cudaSuccess;
struct Capture {
  CUgraph_st* graph = nullptr;
  bool invalidated = false;
};
thread_local Capture capture;

cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}

bool valid_config(const LaunchConfig& c) {
  const dim3 g = c.grid, b = c.block;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0) return false;
  if (g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) return false;
  if (b.x > 1024 || b.y > 1024 || b.z > 64) return false;
  return static_cast<uint64_t>(b.x) * b.y * b.z <= kMaxBlockThreads;
}

// Whether the pointers lie where the copy's kind says (cudaMemcpyDefault: anywhere).
bool matches_kind(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (count == 0) return true;
  const bool dst_device = is_device_range(dst, count), src_device = is_device_range(src, count);
  const bool dst_host = !is_device_pointer(dst), src_host = !is_device_pointer(src);
  switch (kind) {
    case cudaMemcpyHostToHost:
      return dst_host && src_host;
    case cudaMemcpyHostToDevice:
      return dst_device && src_host;
    case cudaMemcpyDeviceToHost:
      return dst_host && src_device;
    case cudaMemcpyDeviceToDevice:
      return dst_device && src_device;
    case cudaMemcpyDefault:
      return (dst_device || dst_host) && (src_device || src_host);
  }
  return false;
}

}  // namespace

bool forbidden_in_capture() {
  if (!capture.graph) return false;
  capture.invalidated = true;
  last_error = cudaErrorStreamCaptureUnsupported;
  return true;
}

void issue(std::function<void()> work) {
  if (capture.graph) {
    capture.graph->work.push_back(std::move(work));
    return;
  }
  DeviceAccess access;
  work();
}

void launch(const char* kernel, const LaunchConfig& config, std::function<void()> thread_body) {
  if (!valid_config(config)) {
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  if (config.shared_bytes > kMaxSharedBytes) {
    fail(cudaErrorInvalidValue);
    return;
  }
  issue([kernel, config, body = std::move(thread_body)] { run_grid(kernel, config, body); });
}

}  // namespace psgd::emu

using namespace psgd::emu;

// ---- Errors and devices -------------------------------------------------------------------------

cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  return last_error;
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorIllegalState:
      return "the operation cannot be performed in the present state";
    default:
      return "unknown error (emulated CUDA runtime)";
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

// The emulated device reports compute capability 9.0, a Hopper card, whose kernels it runs.
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  switch (attribute) {
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    default:
      return fail(cudaErrorInvalidValue);
  }
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}

cudaError_t cudaDeviceSynchronize() {
  return forbidden_in_capture() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return cudaDeviceSynchronize();
}

// No profiler attaches to the emulator: its recording switches do nothing.
cudaError_t cudaProfilerStart() {
  return cudaSuccess;
}

cudaError_t cudaProfilerStop() {
  return cudaSuccess;
}

// ---- Memory -------------------------------------------------------------------------------------

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = nullptr;
  if (forbidden_in_capture()) return cudaErrorStreamCaptureUnsupported;
  if (bytes == 0) return cudaSuccess;
  if (bytes > kDeviceBytes - device_bytes_in_use()) return fail(cudaErrorMemoryAllocation);
  *ptr = device_allocate(bytes);
  return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void* ptr) {
  if (forbidden_in_capture()) return cudaErrorStreamCaptureUnsupported;
  if (!ptr) return cudaSuccess;
  return device_release(ptr) ? cudaSuccess : fail(cudaErrorInvalidValue);
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  *total = kDeviceBytes;
  *free = kDeviceBytes - device_bytes_in_use();
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t) {
  if (!matches_kind(dst, src, count, kind)) return fail(cudaErrorInvalidValue);
  // Host memory here is never pinned, and a capture cannot record a copy from pageable memory.
  const bool host_side = count && (!is_device_pointer(dst) || !is_device_pointer(src));
  if (host_side && forbidden_in_capture()) return cudaErrorStreamCaptureUnsupported;
  issue([=] { std::memmove(dst, src, count); });
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (forbidden_in_capture()) return cudaErrorStreamCaptureUnsupported;
  return cudaMemcpyAsync(dst, src, count, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  if (count && !is_device_range(ptr, count)) return fail(cudaErrorInvalidValue);
  issue([=] { std::memset(ptr, value, count); });
  return cudaSuccess;
}

cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  if (forbidden_in_capture()) return cudaErrorStreamCaptureUnsupported;
  return cudaMemsetAsync(ptr, value, count, nullptr);
}

// ---- Graphs -------------------------------------------------------------------------------------

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  // The legacy default stream cannot be captured (0 is the per-thread stream in psgd's builds).
  if (stream == cudaStreamLegacy) return fail(cudaErrorStreamCaptureUnsupported);
  if (capture.graph) return fail(cudaErrorIllegalState);
  capture = {new CUgraph_st, false};
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* status) {
  *status = !capture.graph        ? cudaStreamCaptureStatusNone
            : capture.invalidated ? cudaStreamCaptureStatusInvalidated
                                  : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  *graph = nullptr;
  if (!capture.graph) return fail(cudaErrorIllegalState);
  std::unique_ptr<CUgraph_st> captured(capture.graph);
  const bool invalidated = capture.invalidated;
  capture = {};
  if (invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  *graph = captured.release();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  if (!exec) return fail(cudaErrorInvalidValue);
  if (forbidden_in_capture()) return cudaErrorStreamCaptureUnsupported;
  DeviceAccess access;
  for (const auto& work : exec->work) work();
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
