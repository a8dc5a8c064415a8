// Comm: the ranks of a data-parallel job and what they do together. One process is one rank;
// launched by mpirun (or srun), the ranks talk through MPI on the CPU or NCCL on GPUs, and
// alone a process is a single rank whose collectives do nothing. Every collective must be
// called by every rank, in the same order.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "engine/context.h"

namespace psgd {

enum class ReduceOp : uint8_t { Sum, Min, Max };

class Comm {
 public:
  virtual ~Comm() = default;

  virtual int rank() const = 0;
  virtual int world() const = 0;
  // The rank among those on this node: picks the GPU.
  virtual int local_rank() const = 0;
  virtual const char* backend() const = 0;  // "single", "mpi" or "nccl"

  // In place, on the tensor's device: the sum of a float32 or float64 tensor over ranks, or the
  // mean of a float32 one.
  virtual void allreduce_sum(Context& ctx, const Tensor& t) = 0;
  virtual void allreduce_mean(Context& ctx, const Tensor& t) = 0;
  // Every rank receives rank `root`'s values of `t`.
  virtual void broadcast(Context& ctx, const Tensor& t, int root) = 0;
  // Host values reduced over ranks, in place: metrics and agreement checks.
  virtual void allreduce_host(std::span<double> values, ReduceOp op) = 0;
  // Every rank receives rank `root`'s bytes (host memory).
  virtual void broadcast_host(std::span<std::byte> bytes, int root) = 0;

  // Ends every rank of the job with exit status 1, after this rank prints `message` on stderr;
  // used when this rank fails so that the others do not wait for it forever.
  [[noreturn]] virtual void abort(const std::string& message) = 0;
};

// True when this process was started by an MPI launcher (mpirun, mpiexec, srun with PMI/PMIx).
bool launched_by_mpi();

// This process's place in the job: MPI ranks when launched by an MPI launcher (an error if the
// build has no MPI), otherwise a single rank that needs no MPI at run time.
std::unique_ptr<Comm> join_job();

// GPU collectives over NCCL for ranks whose context runs on CUDA; the communicator's id is
// shared through `host` (the job's MPI ranks, or a single rank). Errors in builds without NCCL.
std::unique_ptr<Comm> make_nccl_comm(Comm& host, Context& ctx);

// A single rank, for code that runs outside a job (tests, psgd-eval).
Comm& single_rank();

// Throws unless every rank holds the same `values` (bit for bit): `what` names them.
void check_ranks_agree(Comm& comm, std::span<const double> values, const std::string& what);

}  // namespace psgd
