#include "engine/comm.h"

#include <cstdlib>
#include <iostream>
#include <vector>

#include "engine/check.h"
#include "engine/comm_backends.h"

namespace psgd {
namespace {

class SingleRank final : public Comm {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  int local_rank() const override { return 0; }
  const char* backend() const override { return "single"; }
  void allreduce_sum(Context&, const Tensor&) override {}
  void allreduce_mean(Context&, const Tensor&) override {}
  void broadcast(Context&, const Tensor&, int root) override {
    PSGD_CHECK(root == 0, "broadcast from rank ", root, " in a job of one rank");
  }
  void allreduce_host(std::span<double>, ReduceOp) override {}
  void broadcast_host(std::span<std::byte>, int root) override {
    PSGD_CHECK(root == 0, "broadcast from rank ", root, " in a job of one rank");
  }
  [[noreturn]] void abort(const std::string& message) override {
    std::cerr << message << std::endl;
    std::exit(1);
  }
};

}  // namespace

bool launched_by_mpi() {
  // Open MPI's mpirun, MPICH/Hydra and Intel MPI (PMI), and PMIx launchers including srun.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(name)) return true;
  return false;
}

std::unique_ptr<Comm> join_job() {
  if (!launched_by_mpi()) {
    // srun without an MPI plugin starts independent copies, which would all write one run.
    const char* tasks = std::getenv("SLURM_NTASKS");
    PSGD_CHECK(!tasks || std::atoi(tasks) <= 1, "srun started ", tasks,
               " tasks without MPI (no PMI/PMIx environment): use srun --mpi=pmix, or mpirun");
    return std::make_unique<SingleRank>();
  }
#ifdef PSGD_WITH_MPI
  return make_mpi_comm();
#else
  PSGD_FAIL(
      "started by an MPI launcher, but this build has no MPI: install libopenmpi-dev and "
      "rebuild, or run without mpirun");
#endif
}

#ifndef PSGD_WITH_NCCL
std::unique_ptr<Comm> make_nccl_comm(Comm&, Context&) {
  PSGD_FAIL("GPU ranks need NCCL, and this build has none (CUDA with nccl.h and libnccl)");
}
#endif

Comm& single_rank() {
  static SingleRank single;
  return single;
}

void check_ranks_agree(Comm& comm, std::span<const double> values, const std::string& what) {
  if (comm.world() == 1) return;
  std::vector<double> low(values.begin(), values.end()), high = low;
  comm.allreduce_host(low, ReduceOp::Min);
  comm.allreduce_host(high, ReduceOp::Max);
  for (size_t i = 0; i < values.size(); ++i)
    PSGD_CHECK(low[i] == high[i], what, " differ between ranks (value ", i, ": ", low[i], " to ",
               high[i], "); the ranks have diverged");
}

}  // namespace psgd
