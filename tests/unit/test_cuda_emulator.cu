// The CUDA emulator itself (tests/cuda_emulator), on kernels written for these checks: barriers
// and shuffles give CUDA's results, and each rule it enforces fails as documented. Built and run
// only in the emulated build (PSGD_CUDA=EMULATE).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda_check.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.h"
#include "tests/cuda_emulator/device_memory.h"
#include "tests/cuda_emulator/race_detector.h"

namespace {

using psgd::cuda::await_prior_grids;

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
  await_prior_grids();
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
  await_prior_grids();
  __shared__ int partial[256];
  partial[threadIdx.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2)
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

// Thread 0's write after the first barrier and thread 1's read before the second: no barrier
// orders them, though both threads have passed one.
__global__ void racy_after_barrier(int* out) {
  await_prior_grids();
  __shared__ int value;
  if (threadIdx.x == 0) value = 1;
  __syncthreads();
  if (threadIdx.x == 0) value = 2;
  if (threadIdx.x == 1) out[0] = value;
  __syncthreads();
}

// Every thread of the block adds to out[0]: plainly (a race), or atomically (none).
__global__ void plain_add(int* out) {
  await_prior_grids();
  out[0] += 1;
}

__global__ void atomic_add(int* out) {
  await_prior_grids();
  atomicAdd(out, 1);
}

__global__ void divergent_barrier(int* out) {
  await_prior_grids();
  if (threadIdx.x % 2 == 0) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Each lane's results of three shuffles, by lane: down by 3, xor 5, and lane 7's value.
__global__ void shuffles(int* down, int* xored, int* broadcast) {
  await_prior_grids();
  const int v = 100 + static_cast<int>(threadIdx.x);
  down[threadIdx.x] = __shfl_down_sync(0xffffffffu, v, 3);
  xored[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 5);
  broadcast[threadIdx.x] = __shfl_sync(0xffffffffu, v, 7);
}

// Lane 31 returns first: the others still exchange (as CUDA allows), reading it gives undefined
// bits (all ones here).
__global__ void shuffle_after_exit(int* out) {
  await_prior_grids();
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

// A shuffle among the lower half of the warp, then one among all lanes, then groups of 8.
__global__ void mixed_shuffles(int* half, int* whole, int* groups) {
  await_prior_grids();
  const int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 16) half[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, v, 1);
  whole[threadIdx.x] = __shfl_sync(0xffffffffu, v * 10, 31);
  groups[threadIdx.x] = __shfl_down_sync(0xffffffffu, v, 2, 8);
}

// One warp's TF32 product of A (16x8, row-major) and B (8x8, row-major here) into D (16x8),
// through the fragments as kernels/cuda/mma.h documents them; a lane that returns first when
// `early` is set.
__global__ void warp_product(const float* a, const float* b, float* d, bool early) {
  await_prior_grids();
  const unsigned g = threadIdx.x / 4, t = threadIdx.x % 4;
  if (early && threadIdx.x == 9) return;
  const float fa[4] = {a[g * 8 + t], a[(g + 8) * 8 + t], a[g * 8 + t + 4], a[(g + 8) * 8 + t + 4]};
  const float fb[2] = {b[t * 8 + g], b[(t + 4) * 8 + g]};
  float fd[4] = {1.0f, 1.0f, 1.0f, 1.0f};
  psgd::cuda::mma_m16n8k8_tf32(fd, fa, fb);
  d[g * 8 + 2 * t] = fd[0];
  d[g * 8 + 2 * t + 1] = fd[1];
  d[(g + 8) * 8 + 2 * t] = fd[2];
  d[(g + 8) * 8 + 2 * t + 1] = fd[3];
}

__global__ void throwing_kernel(int* out) {
  await_prior_grids();
  __syncthreads();
  if (threadIdx.x == 5) throw std::runtime_error("thread 5 failed");
  __syncthreads();
  out[threadIdx.x] = 1;
}

// A 16-byte vector load from an address 8 bytes past an alignment boundary.
__global__ void misaligned_load(const int* p, int* out) {
  await_prior_grids();
  out[0] = reinterpret_cast<const int4*>(p + 2)->x;
}

// Far more stack than a fiber has.
__global__ void deep_stack(int* out) {
  await_prior_grids();
  volatile char big[256 * 1024];
  big[0] = 1;
  out[0] = big[0];
}

__global__ void write_value(int* out, int value) {
  await_prior_grids();
  out[threadIdx.x] = value;
}

// Thread 7 returns without waiting for the grids before it.
__global__ void forgets_to_wait(int* out) {
  if (threadIdx.x == 7) return;
  await_prior_grids();
  out[threadIdx.x] = 1;
}

// Thread 5 reads device memory before waiting for the grids that may be writing it (thread 0,
// which runs first, waits at once).
__global__ void reads_before_waiting(const int* in, int* out) {
  const int v = threadIdx.x == 5 ? in[0] : 0;
  await_prior_grids();
  out[threadIdx.x] = v;
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

struct ChildResult {
  int status;          // the exit status (a fault handler's or the race detector's included)
  std::string errors;  // what it wrote to stderr
};

// Runs f in a child process.
ChildResult run_in_child(const std::function<void()>& f) {
  int pipe_ends[2];
  REQUIRE(pipe(pipe_ends) == 0);
  psgd::emu::race::prepare_fork();
  std::fflush(nullptr);  // or the child's exit may print the parent's pending output again
  const pid_t child = fork();
  if (child == 0) {
    dup2(pipe_ends[1], STDERR_FILENO);
    close(pipe_ends[0]);
    f();
    _exit(0);
  }
  close(pipe_ends[1]);
  ChildResult result{0, {}};
  char buffer[4096];
  for (ssize_t n; (n = read(pipe_ends[0], buffer, sizeof buffer)) > 0;)
    result.errors.append(buffer, static_cast<size_t>(n));
  close(pipe_ends[0]);
  int status = 0;
  waitpid(child, &status, 0);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

int exit_status_of(const std::function<void()>& f) {
  return run_in_child(f).status;
}

// Sets an environment variable for its lifetime, then restores what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("emulator: barriers make a block's threads wait for each other") {
  Ints out(3);
  PSGD_LAUNCH(tree_sum, 3, 256)(out.p);
  CUDA_CHECK_LAUNCH();
  CHECK(out.host() == std::vector<int>(3, 255 * 256 / 2));
}

#if PSGD_CUDA_RACECHECK
TEST_CASE("emulator: racecheck reports accesses no barrier orders, and only those") {
  Ints out(4);
  // The report names the kernel and the racing threads.
  const auto check_race = [&](const std::function<void()>& launch, const char* kernel) {
    const ChildResult r = run_in_child(launch);
    INFO(r.errors);
    CHECK(r.status == psgd::emu::race::kRaceExitStatus);
    CHECK(r.errors.find("ThreadSanitizer: data race") != std::string::npos);
    CHECK(r.errors.find(kernel) != std::string::npos);
    CHECK(r.errors.find("'block (") != std::string::npos);
  };
  const auto tree = [&] { PSGD_LAUNCH(racy_tree_sum, 3, 256)(out.p); };
  const auto after_barrier = [&] { PSGD_LAUNCH(racy_after_barrier, 2, 64)(out.p); };
  const auto plain = [&] { PSGD_LAUNCH(plain_add, 1, 64)(out.p); };
  check_race(tree, "racy_tree_sum");
  check_race(after_barrier, "racy_after_barrier");
  check_race(plain, "plain_add");
  // Correct kernels run clean: barriers, atomics, shared memory reused block after block.
  const auto clean = [&] {
    PSGD_LAUNCH(tree_sum, 3, 256)(out.p);
    PSGD_LAUNCH(atomic_add, 4, 64)(out.p);
    cudaDeviceSynchronize();
  };
  const ChildResult r = run_in_child(clean);
  INFO(r.errors);
  CHECK(r.status == 0);
}
#else
TEST_CASE("emulator: without the barrier, threads read partners not yet updated") {
  Ints out(3);
  PSGD_LAUNCH(racy_tree_sum, 3, 256)(out.p);
  CHECK(out.host() != std::vector<int>(3, 255 * 256 / 2));
}
#endif

TEST_CASE("emulator: a barrier some threads never reach fails the launch") {
  Ints out(64);
  const auto launch = [&] { PSGD_LAUNCH(divergent_barrier, 1, 64)(out.p); };
  CHECK(throws_containing(
      launch, "kernel divergent_barrier: 32 threads returned while 32 wait at __syncthreads"));
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
  PSGD_LAUNCH(shuffle_after_exit, 1, 32)(out.p);
  const auto o = out.host();
  for (int t = 0; t < 30; ++t) CHECK(o[t] == t + 1);
  CHECK(o[30] == -1);
}

TEST_CASE("emulator: shuffles of part of a warp, and of groups narrower than a warp") {
  Ints half(16), whole(32), groups(32);
  PSGD_LAUNCH(mixed_shuffles, 1, 32)(half.p, whole.p, groups.p);
  const auto h = half.host(), w = whole.host(), g = groups.host();
  for (int t = 0; t < 32; ++t) {
    CAPTURE(t);
    if (t < 16) CHECK(h[t] == (t ^ 1));
    CHECK(w[t] == 310);
    CHECK(g[t] == (t % 8 + 2 < 8 ? t + 2 : t));
  }
}

TEST_CASE("emulator: a warp's tensor-core product multiplies the fragments' matrices") {
  // Small integers times powers of two are exact in TF32; 1 + 2^-12 is not, and the product
  // reads it as 1 (tensor cores ignore the low 13 mantissa bits).
  std::vector<float> a(16 * 8), b(8 * 8);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(int(i * 7 % 11) - 5) * 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(int(i * 5 % 9) - 4);
  b[3 * 8 + 2] = 1.0f + 1.0f / 4096;
  float *da, *db, *dd;
  CUDA_CHECK(cudaMalloc(&da, a.size() * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&db, b.size() * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dd, 16 * 8 * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(da, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(db, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice));
  PSGD_LAUNCH(warp_product, 1, 32)(da, db, dd, false);
  std::vector<float> d(16 * 8);
  CUDA_CHECK(cudaMemcpy(d.data(), dd, d.size() * sizeof(float), cudaMemcpyDeviceToHost));
  b[3 * 8 + 2] = 1.0f;
  for (int row = 0; row < 16; ++row)
    for (int col = 0; col < 8; ++col) {
      float expected = 1.0f;
      for (int k = 0; k < 8; ++k) expected += a[row * 8 + k] * b[k * 8 + col];
      CAPTURE(row);
      CAPTURE(col);
      CHECK(d[row * 8 + col] == expected);
    }
  // Rounding to TF32 (ulp 2^-10 at 1): a quarter ulp goes down, three quarters and a tie up.
  CHECK(psgd::emu::round_to_tf32(1.0f + 1.0f / 4096) == 1.0f);
  CHECK(psgd::emu::round_to_tf32(1.0f + 3.0f / 4096) == 1.0f + 1.0f / 1024);
  CHECK(psgd::emu::round_to_tf32(1.0f + 1.0f / 2048) == 1.0f + 1.0f / 1024);
  CHECK(psgd::emu::round_to_tf32(-1.0f - 1.0f / 2048) == -1.0f - 1.0f / 1024);
  const auto early = [&] { PSGD_LAUNCH(warp_product, 1, 32)(da, db, dd, true); };
  CHECK(throws_containing(early, "mma.sync with lane 9 returned"));
  cudaFree(da);
  cudaFree(db);
  cudaFree(dd);
}

TEST_CASE("emulator: an exception in a thread fails the launch, and the other threads unwind") {
  Ints out(64);
  const auto launch = [&] { PSGD_LAUNCH(throwing_kernel, 2, 32)(out.p); };
  CHECK(throws_containing(launch, "thread 5 failed"));
  PSGD_LAUNCH(write_value, 1, 64)(out.p, 3);  // and the next launch runs normally
  CHECK(out.host() == std::vector<int>(64, 3));
}

TEST_CASE("emulator: kernels get device pointers only") {
  std::vector<int> host(4);
  const auto launch = [&] { PSGD_LAUNCH(write_value, 1, 4)(host.data(), 1); };
  CHECK(throws_containing(launch, "kernel write_value: argument 1 points outside device memory"));
}

TEST_CASE("emulator: a programmatic dependent kernel waits for the grids before it") {
  const ScopedEnv pdl("PSGD_PDL", "1");
  REQUIRE(psgd::cuda::dependent_launches());  // the emulated card is a Hopper
  Ints in(32), out(32);
  const auto forgetful = [&] { PSGD_LAUNCH(forgets_to_wait, 1, 32)(out.p); };
  CHECK(throws_containing(forgetful,
                          "kernel forgets_to_wait: thread 7 returned without await_prior_grids()"));
  const auto reads_early = [&] { PSGD_LAUNCH(reads_before_waiting, 1, 32)(in.p, out.p); };
  const ChildResult early = run_in_child(reads_early);
  CHECK(early.status == psgd::emu::kFaultExitStatus);
  CHECK(early.errors.find("a kernel touching it before await_prior_grids()") != std::string::npos);
}

TEST_CASE("emulator: with PSGD_PDL=0 launches are ordinary, touching memory anywhere") {
  const ScopedEnv pdl("PSGD_PDL", "0");
  CHECK_FALSE(psgd::cuda::dependent_launches());
  Ints in(32), out(32);
  PSGD_LAUNCH(write_value, 1, 32)(out.p, 7);
  PSGD_LAUNCH(forgets_to_wait, 1, 32)(in.p);
  PSGD_LAUNCH(reads_before_waiting, 1, 32)(in.p, out.p);
  CHECK_NOTHROW(CUDA_CHECK_LAUNCH());
  std::vector<int> expected(32, 0);
  expected[5] = 1;
  CHECK(out.host() == expected);
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
  CHECK(exit_status_of([&] { CHECK(out.p[0] == -1); }) == psgd::emu::kFaultExitStatus);
}

TEST_CASE("emulator: a kernel writing one element past its buffer faults, as does a deep stack") {
  Ints out(4);
  const auto one_past = [&] { PSGD_LAUNCH(write_value, 1, 5)(out.p, 1); };
  const auto exactly = [&] { PSGD_LAUNCH(write_value, 1, 4)(out.p, 1); };
  const auto deep = [&] { PSGD_LAUNCH(deep_stack, 1, 1)(out.p); };
  CHECK(exit_status_of(one_past) == psgd::emu::kFaultExitStatus);
  CHECK(exit_status_of(exactly) == 0);
  CHECK(exit_status_of(deep) == psgd::emu::kFaultExitStatus);
}

TEST_CASE("emulator: a misaligned vector load stops the test (the alignment sanitizer)") {
  Ints in(8), out(1);
  const auto misaligned = [&] { PSGD_LAUNCH(misaligned_load, 1, 1)(in.p, out.p); };
  CHECK(exit_status_of(misaligned) != 0);
}

TEST_CASE("emulator: cuBLAS products follow cuBLAS's column-major contract") {
  // op(A) (m x k) op(B) (k x n) with padded leading dimensions, against sums written here; C
  // starts as NaN, which beta = 0 must not read.
  const int m = 3, n = 4, k = 5, pad = 2;
  cublasHandle_t handle = nullptr;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasSetMathMode(handle, CUBLAS_PEDANTIC_MATH) == CUBLAS_STATUS_SUCCESS);
  for (const auto& [ta, tb] : {std::pair{CUBLAS_OP_N, CUBLAS_OP_N},
                               {CUBLAS_OP_T, CUBLAS_OP_N},
                               {CUBLAS_OP_N, CUBLAS_OP_T},
                               {CUBLAS_OP_T, CUBLAS_OP_T}}) {
    const bool at = ta == CUBLAS_OP_T, bt = tb == CUBLAS_OP_T;
    const int a_rows = at ? k : m, a_cols = at ? m : k, lda = a_rows + pad;
    const int b_rows = bt ? n : k, b_cols = bt ? k : n, ldb = b_rows + pad;
    std::vector<float> a(static_cast<size_t>(lda) * a_cols), b(static_cast<size_t>(ldb) * b_cols);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 7) - 3.0f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 5) - 2.0f;
    const int ldc = m + pad;
    float *da, *db, *dc;
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&da), a.size() * 4) == cudaSuccess);
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&db), b.size() * 4) == cudaSuccess);
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&dc), size_t{4} * ldc * n) == cudaSuccess);
    cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice);
    const float alpha = 2.0f, beta = 0.0f;
    REQUIRE(cublasSgemm(handle, ta, tb, m, n, k, &alpha, da, lda, db, ldb, &beta, dc, ldc) ==
            CUBLAS_STATUS_SUCCESS);
    std::vector<float> c(static_cast<size_t>(ldc) * n);
    cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        float sum = 0.0f;
        for (int p = 0; p < k; ++p)
          sum += (at ? a[p + i * lda] : a[i + p * lda]) * (bt ? b[j + p * ldb] : b[p + j * ldb]);
        CHECK(c[i + j * ldc] == alpha * sum);
      }
    CHECK(cublasSgemm(handle, ta, tb, m, n, k, &alpha, da, a_rows - 1, db, ldb, &beta, dc, ldc) ==
          CUBLAS_STATUS_INVALID_VALUE);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
  }
  cublasDestroy(handle);
}
