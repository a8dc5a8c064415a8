// The CUDA members of the check family: each reports the library call, its error string, file
// and line as a psgd::Error. Only included by sources compiled with the CUDA backend.
#pragma once

#include <cuda_runtime.h>

#include "engine/check.h"

#define CUDA_CHECK(expr)                                                                \
  do {                                                                                  \
    const cudaError_t psgd_status_ = (expr);                                            \
    if (psgd_status_ != cudaSuccess) [[unlikely]]                                       \
      ::psgd::detail::throw_error(__FILE__, __LINE__, #expr, "CUDA error: ",            \
                                  cudaGetErrorString(psgd_status_));                    \
  } while (0)

// Checks the most recent kernel launch (launch-configuration errors surface here).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
