// GPU ranks over NCCL. The communicator's id comes from rank 0 through the host ranks (MPI);
// collectives run on the context's stream, so they are captured in the training step's CUDA
// graph like any kernel, and the host never waits for them. A watchdog thread polls NCCL's
// asynchronous error state: a peer that failed or vanished would otherwise leave this rank's
// kernels waiting forever.
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "engine/comm.h"
#include "engine/cuda_check.h"

// The error's name, and NCCL's own last message, which says what was wrong (NCCL_DEBUG=WARN
// prints it too).
#define NCCL_CHECK(expr)                                                                       \
  do {                                                                                         \
    const ncclResult_t psgd_status_ = (expr);                                                  \
    if (psgd_status_ != ncclSuccess) [[unlikely]]                                              \
      ::psgd::detail::throw_error(__FILE__, __LINE__, #expr, ::psgd::detail::call_name(#expr), \
                                  " failed: ", ncclGetErrorString(psgd_status_), " (",         \
                                  ncclGetLastError(nullptr), ")");                             \
  } while (0)

namespace psgd {
namespace {

class NcclRanks final : public Comm {
 public:
  NcclRanks(Comm& host, Context& ctx) : host_(host) {
    PSGD_CHECK(ctx.device() == Device::CUDA, "NCCL ranks need a CUDA context");
    ncclUniqueId id{};
    if (host.rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    host.broadcast_host(std::as_writable_bytes(std::span(&id, 1)), 0);
    NCCL_CHECK(ncclCommInitRank(&comm_, host.world(), id, host.rank()));
    watchdog_ = std::thread([this] { watch(); });
  }
  ~NcclRanks() override {
    stop_ = true;
    watchdog_.join();
    if (comm_) ncclCommDestroy(comm_);
  }

  int rank() const override { return host_.rank(); }
  int world() const override { return host_.world(); }
  int local_rank() const override { return host_.local_rank(); }
  const char* backend() const override { return "nccl"; }

  void allreduce_sum(Context& ctx, const Tensor& t) override { allreduce(ctx, t, ncclSum); }
  void allreduce_mean(Context& ctx, const Tensor& t) override { allreduce(ctx, t, ncclAvg); }
  void broadcast(Context& ctx, const Tensor& t, int root) override {
    require_device(t, "broadcast");
    NCCL_CHECK(ncclBroadcast(t.data, t.data, t.bytes(), ncclUint8, root, comm_, ctx.stream()));
  }
  void allreduce_host(std::span<double> values, ReduceOp op) override {
    host_.allreduce_host(values, op);
  }
  void broadcast_host(std::span<std::byte> bytes, int root) override {
    host_.broadcast_host(bytes, root);
  }
  [[noreturn]] void abort(const std::string& message) override {
    // Kernels of a collective whose peer died never finish: abort the communicator first.
    stop_ = true;
    watchdog_.join();
    ncclCommAbort(comm_);
    comm_ = nullptr;
    host_.abort(message);
    std::abort();  // not reached: for the compiler
  }

 private:
  // Ends this process when NCCL reports an asynchronous error; the launcher then ends the
  // other ranks (as when a rank is killed).
  void watch() {
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess || state == ncclSuccess ||
          state == ncclInProgress)
        continue;
      std::cerr << "psgd rank " << host_.rank() << ": NCCL failed asynchronously ("
                << ncclGetErrorString(state) << "); ending this rank" << std::endl;
      ncclCommAbort(comm_);
      std::_Exit(1);
    }
  }

  void allreduce(Context& ctx, const Tensor& t, ncclRedOp_t op) {
    require_device(t, "allreduce");
    PSGD_CHECK(t.dtype != DType::I32, "NCCL allreduce: integer tensors are not reduced");
    NCCL_CHECK(ncclAllReduce(t.data, t.data, static_cast<size_t>(t.numel()),
                             t.dtype == DType::F64 ? ncclDouble : ncclFloat, op, comm_,
                             ctx.stream()));
  }
  static void require_device(const Tensor& t, const char* what) {
    PSGD_CHECK(t.device == Device::CUDA, "NCCL ", what, " of a CPU tensor");
  }

  Comm& host_;
  ncclComm_t comm_ = nullptr;
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(Comm& host, Context& ctx) {
  return std::make_unique<NcclRanks>(host, ctx);
}

}  // namespace psgd
