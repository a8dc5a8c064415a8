// Context: where ops run and what they share: the device, CPU threads, the base RNG seed, one
// preallocated workspace, and on CUDA the stream with the cuBLAS and cuDNN handles bound to it.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/memory.h"

// The CUDA handle types, declared as CUDA's own headers declare them so that this header stays
// free of CUDA includes (cudaStream_t, cublasHandle_t and cudnnHandle_t are pointers to these).
struct CUstream_st;
struct cublasContext;
struct cudnnContext;

namespace psgd {

// How ops do their maths.
struct Numerics {
  // GPU: TF32 tensor cores in convolutions and matrix products (cards from Ampere on). Off is
  // strict float32, for parity runs.
  bool tf32 = true;
  // GPU: deterministic cuDNN algorithms, so that two runs give identical weights.
  bool deterministic = false;
  // The bf16 mode: activations and their gradients stored as bfloat16 (float32 arithmetic, one
  // rounding per stored value); weights, gradients of weights, optimizer state and statistics
  // stay float32; convolutions and linear layers multiply the weights' bf16 roundings, on tensor
  // cores on a GPU whatever `tf32` says. Runs on the CPU too, as the reference of the GPU's bf16
  // kernels.
  bool bf16 = false;
  // GPU: how each direction of a convolution runs. Besides cuDNN's choice there are psgd's own
  // kernels for 3x3 convolutions: a direct one in float32 (stride 1, at most 64 channels; forward
  // and data gradient) and one on tensor cores (TF32 or bf16; stride 1 and 2 in all three
  // directions), and, with bf16 activations, cuDNN's float32 kernels on widened copies (the same
  // products, exact in TF32). Auto times them against cuDNN's choice once per shape and keeps the
  // fastest (except under `deterministic`, where cuDNN's heuristic choice stands, the same in
  // every run); Cudnn, Direct, TensorCore and Widened force one where it serves, for measurements
  // and tests.
  enum class Conv { Auto, Cudnn, Direct, TensorCore, Widened };
  Conv conv = Conv::Auto;
};

struct CudaResources;  // engine/context_cuda.cpp
class Context;
// How a context computes, for logs and reports: "bf16", "tf32" (GPU) or "fp32".
const char* numerics_name(const Context& ctx);

class Context {
 public:
  // threads = 0 uses every core the process may run on.
  explicit Context(Device device = Device::CPU, int threads = 0, uint64_t seed = 0,
                   Numerics math = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Device device() const { return device_; }
  int threads() const { return threads_; }
  uint64_t seed() const { return seed_; }
  const Numerics& math() const { return math_; }
  // The element type of activations and their gradients: float32, or bfloat16 in the bf16 mode.
  DType activation_dtype() const { return math_.bf16 ? DType::BF16 : DType::F32; }

  // CUDA contexts only. Every op of a context runs on its stream: the per-thread default
  // stream of the thread that made the context (see kernels/cuda/launch.h), which CUDA graphs
  // can capture.
  CUstream_st* stream() const;
  cublasContext* cublas() const;
  cudnnContext* cudnn() const;
  // Waits until the device has finished this context's work (outside steps only).
  void synchronize() const;
  // CUDA contexts: starts or stops the recording of a profiler that was told to wait for it
  // (cudaProfilerStart/Stop; `ncu --profile-from-start off`), after the work so far has finished.
  // Nothing elsewhere.
  void profiler_recording(bool on) const;

  // The workspace only grows here, at planning time, never inside a step.
  void reserve_workspace(int64_t floats);
  // Changes whenever the workspace moves (a captured step holds its address).
  uint64_t workspace_generation() const { return workspace_generation_; }
  // A float view of the first `floats` workspace elements; more than was reserved is a bug.
  Tensor workspace(int64_t floats) const;
  int64_t reserved_workspace_floats() const { return workspace_floats_; }

 private:
  Device device_;
  int threads_;
  uint64_t seed_;
  Numerics math_;
  std::unique_ptr<CudaResources, void (*)(CudaResources*)> cuda_;
  DeviceBuffer workspace_;
  int64_t workspace_floats_ = 0;
  uint64_t workspace_generation_ = 0;
};

}  // namespace psgd
