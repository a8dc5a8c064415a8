// The part of NCCL psgd calls, for the emulated GPU: a communicator of one rank (the emulator has
// one GPU), so that the NCCL path of psgd-train runs end to end: collectives on the stream,
// recorded by a capture like kernels. With one rank, a sum, a mean or a broadcast leaves the data
// as it is (copied where the output is another buffer); buffers must be device memory.
#include <nccl.h>

#include <cstring>

#include "tests/cuda_emulator/device_memory.h"
#include "tests/cuda_emulator/stream.h"

struct ncclComm {};

namespace {

thread_local const char* last_error = "";

ncclResult_t fail(ncclResult_t result, const char* why) {
  last_error = why;
  return result;
}

size_t element_bytes(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    default: return 8;
  }
}

// The one rank's collective: the output becomes the input.
ncclResult_t collective(const void* send, void* receive, size_t count, ncclDataType_t type,
                        ncclComm_t comm) {
  if (!comm) return fail(ncclInvalidArgument, "no communicator");
  const size_t bytes = count * element_bytes(type);
  if (bytes && (!psgd::emu::is_device_range(send, bytes) ||
                !psgd::emu::is_device_range(receive, bytes)))
    return fail(ncclInvalidArgument, "a buffer is not device memory of the given size");
  if (send != receive) psgd::emu::issue([=] { std::memmove(receive, send, bytes); });
  return ncclSuccess;
}

}  // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof *id);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId, int rank) {
  *comm = nullptr;
  if (nranks != 1 || rank != 0)
    return fail(ncclInvalidUsage, "the emulated GPU takes one rank; use mpirun on real GPUs");
  *comm = new ncclComm;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* error) {
  *error = ncclSuccess;
  return comm ? ncclSuccess : ncclInvalidArgument;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    default: return "an error (emulated NCCL)";
  }
}

const char* ncclGetLastError(ncclComm_t) { return last_error; }

ncclResult_t ncclAllReduce(const void* send, void* receive, size_t count, ncclDataType_t type,
                           ncclRedOp_t, ncclComm_t comm, cudaStream_t) {
  return collective(send, receive, count, type, comm);
}

ncclResult_t ncclBroadcast(const void* send, void* receive, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t) {
  if (root != 0) return fail(ncclInvalidArgument, "the root must be rank 0 of 1");
  return collective(send, receive, count, type, comm);
}
