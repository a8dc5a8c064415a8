// CPU ranks over MPI. Only the loader's prefetching thread runs beside the main thread, and it
// never calls MPI, so MPI_THREAD_FUNNELED is enough.
#include <mpi.h>

#include <climits>
#include <iostream>

#include "engine/check.h"
#include "engine/comm_backends.h"

namespace psgd {
namespace {

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return MPI_SUM;
    case ReduceOp::Min:
      return MPI_MIN;
    case ReduceOp::Max:
      return MPI_MAX;
  }
  return MPI_SUM;
}

int checked_count(int64_t n, const char* what) {
  PSGD_CHECK(n <= INT_MAX, what, ": ", n, " elements is more than one MPI call can carry");
  return static_cast<int>(n);
}

class MpiRanks final : public Comm {
 public:
  MpiRanks() {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
  }
  ~MpiRanks() override { MPI_Finalize(); }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  const char* backend() const override { return "mpi"; }

  void allreduce_sum(Context&, const Tensor& t) override {
    require_host(t, "allreduce");
    PSGD_CHECK(t.dtype != DType::I32, "MPI allreduce: integer tensors are not reduced");
    MPI_Allreduce(MPI_IN_PLACE, t.data, checked_count(t.numel(), "allreduce"),
                  t.dtype == DType::F64 ? MPI_DOUBLE : MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  }
  void allreduce_mean(Context& ctx, const Tensor& t) override {
    allreduce_sum(ctx, t);
    const float scale = 1.0f / static_cast<float>(world_);
    float* v = t.f32();  // gradients: float32
    for (int64_t i = 0; i < t.numel(); ++i) v[i] *= scale;
  }
  void broadcast(Context&, const Tensor& t, int root) override {
    require_host(t, "broadcast");
    MPI_Bcast(t.data, checked_count(static_cast<int64_t>(t.bytes()), "broadcast"), MPI_BYTE, root,
              MPI_COMM_WORLD);
  }
  void allreduce_host(std::span<double> values, ReduceOp op) override {
    MPI_Allreduce(MPI_IN_PLACE, values.data(), checked_count(std::ssize(values), "allreduce"),
                  MPI_DOUBLE, mpi_op(op), MPI_COMM_WORLD);
  }
  void broadcast_host(std::span<std::byte> bytes, int root) override {
    MPI_Bcast(bytes.data(), checked_count(std::ssize(bytes), "broadcast"), MPI_BYTE, root,
              MPI_COMM_WORLD);
  }
  [[noreturn]] void abort(const std::string& message) override {
    std::cerr << message << std::endl;
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();  // MPI_Abort does not return; this is for the compiler
  }

 private:
  static void require_host(const Tensor& t, const char* what) {
    PSGD_CHECK(t.device == Device::CPU, "MPI ", what,
               " of a GPU tensor: GPU ranks exchange through NCCL");
  }

  int rank_ = 0, world_ = 1, local_rank_ = 0;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm() {
  return std::make_unique<MpiRanks>();
}

}  // namespace psgd
