// The CUDA emulator itself (tests/cuda_emulator), on kernels written for these checks: barriers
// and shuffles give CUDA's results, and each rule it enforces fails as documented. Built and run
// only in the emulated build (PSGD_CUDA=EMULATE).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/cuda_check.h"
#include "kernels/cuda/launch.h"

namespace {

// A device buffer of n ints, and back.
struct Ints {
  int* p = nullptr;
  size_t n;
  explicit Ints(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&p, n * sizeof(int))); }
  ~Ints() { cudaFree(p); }
  std::vector<int> host() const {
    std::vector<int> out(n);
    CUDA_CHECK(cudaMemcpy(out.data(), p, n * sizeof(int), cudaMemcpyDeviceToHost));
    return out;
  }
};

// out[block] = the sum of threadIdx.x over the block, by a tree through shared memory.
__global__ void tree_sum(int* out) {
  __shared__ int partial[256];
  partial[threadIdx.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

// The same tree without the barrier in the loop: threads read partners not yet updated.
__global__ void racy_tree_sum(int* out) {
  __shared__ int partial[256];
  partial[threadIdx.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2)
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x % 2 == 0) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Each lane's results of three shuffles, by lane: down by 3, xor 5, and lane 7's value.
__global__ void shuffles(int* down, int* xored, int* broadcast) {
  const int v = 100 + static_cast<int>(threadIdx.x);
  down[threadIdx.x] = __shfl_down_sync(0xffffffffu, v, 3);
  xored[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 5);
  broadcast[threadIdx.x] = __shfl_sync(0xffffffffu, v, 7);
}

__global__ void shuffle_after_exit(int* out) {
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1, 1);
}

__global__ void write_value(int* out, int value) {
  out[threadIdx.x] = value;
}

bool throws_containing(const std::function<void()>& f, const std::string& text) {
  try {
    f();
  } catch (const std::exception& e) {
    INFO(e.what());
    return std::string(e.what()).find(text) != std::string::npos;
  }
  return false;
}

// Runs f in a child process; returns its exit status (a fault handler's exit code included).
int exit_status_of(const std::function<void()>& f) {
  const pid_t child = fork();
  if (child == 0) {
    f();
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("emulator: barriers make a block's threads wait for each other") {
  Ints out(3);
  PSGD_LAUNCH(tree_sum, 3, 256)(out.p);
  CUDA_CHECK_LAUNCH();
  CHECK(out.host() == std::vector<int>(3, 255 * 256 / 2));
  PSGD_LAUNCH(racy_tree_sum, 3, 256)(out.p);
  CHECK(out.host() != std::vector<int>(3, 255 * 256 / 2));
}

TEST_CASE("emulator: a barrier some threads never reach fails the launch") {
  Ints out(64);
  CHECK(throws_containing([&] { PSGD_LAUNCH(divergent_barrier, 1, 64)
                                (out.p); },
                          "kernel divergent_barrier: 32 threads returned while 32 wait at "
                          "__syncthreads"));
}

TEST_CASE("emulator: warp shuffles exchange the lanes' values as CUDA defines them") {
  Ints down(64), xored(64), broadcast(64);
  PSGD_LAUNCH(shuffles, 1, 64)(down.p, xored.p, broadcast.p);
  const auto d = down.host(), x = xored.host(), b = broadcast.host();
  for (int t = 0; t < 64; ++t) {
    CAPTURE(t);
    const int lane = t % 32, warp = t / 32 * 32;
    CHECK(d[t] == 100 + (lane + 3 < 32 ? t + 3 : t));  // lanes past the end keep their own
    CHECK(x[t] == 100 + warp + (lane ^ 5));
    CHECK(b[t] == 100 + warp + 7);
  }
  Ints out(32);
  CHECK(throws_containing([&] { PSGD_LAUNCH(shuffle_after_exit, 1, 32)
                                (out.p); },
                          "waits for lane 31, which has returned"));
}

TEST_CASE("emulator: launch configurations CUDA refuses are errors of the launch") {
  Ints out(1);
  PSGD_LAUNCH(write_value, 1, 2048)(out.p, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  PSGD_LAUNCH(write_value, 0, 32)(out.p, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(cudaGetLastError() == cudaSuccess);  // reading the error clears it
}

TEST_CASE("emulator: a graph records kernels with their arguments and replays them") {
  Ints out(4);
  const cudaStream_t stream = cudaStreamPerThread;
  int value = 5;
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  PSGD_LAUNCH(write_value, 1, 4)(out.p, value);
  value = 6;  // the recorded launch keeps 5
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  CHECK(out.host() != std::vector<int>(4, 5));  // recorded, not run
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
  CHECK(out.host() == std::vector<int>(4, 5));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

TEST_CASE("emulator: a capture fails on what CUDA forbids while capturing") {
  Ints out(4);
  std::vector<int> host(4);
  const cudaStream_t stream = cudaStreamPerThread;
  for (const auto& forbidden : std::vector<std::function<cudaError_t()>>{
           [&] { return cudaMemcpy(host.data(), out.p, 16, cudaMemcpyDeviceToHost); },
           [&] {
             void* p = nullptr;
             return cudaMalloc(&p, 16);
           },
           [&] { return cudaStreamSynchronize(stream); }}) {
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    CHECK(forbidden() == cudaErrorStreamCaptureUnsupported);
    cudaGraph_t graph = nullptr;
    CHECK(cudaStreamEndCapture(stream, &graph) == cudaErrorStreamCaptureInvalidated);
    CHECK(graph == nullptr);
    cudaGetLastError();
  }
}

TEST_CASE("emulator: copies must go where their kind says") {
  Ints out(4);
  std::vector<int> host(4, 1);
  CHECK(cudaMemcpy(out.p, host.data(), 16, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(out.p, host.data(), 32, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(out.p, host.data(), 16, cudaMemcpyHostToDevice) == cudaSuccess);
  cudaGetLastError();
}

TEST_CASE("emulator: new device memory holds NaN bytes, and host code cannot touch it") {
  Ints out(4);
  CHECK(out.host() == std::vector<int>(4, -1));  // 0xffffffff
  CHECK(exit_status_of([&] { CHECK(out.p[0] == -1); }) == 134);
}

TEST_CASE("emulator: a kernel writing one element past its buffer faults") {
  Ints out(4);
  CHECK(exit_status_of([&] { PSGD_LAUNCH(write_value, 1, 5)(out.p, 1); }) == 134);
  CHECK(exit_status_of([&] { PSGD_LAUNCH(write_value, 1, 4)(out.p, 1); }) == 0);
}
