// The CUDA members of the check family: each reports the library call, its error string, file
// and line as a psgd::Error. Only included by sources compiled with the CUDA backend.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "engine/check.h"

#define CUDA_CHECK(expr)                                                                       \
  do {                                                                                         \
    const cudaError_t psgd_status_ = (expr);                                                   \
    if (psgd_status_ != cudaSuccess) [[unlikely]]                                              \
      ::psgd::detail::throw_error(__FILE__, __LINE__, #expr, ::psgd::detail::call_name(#expr), \
                                  " failed: ", cudaGetErrorString(psgd_status_));              \
  } while (0)

// Checks the most recent kernel launch (launch-configuration errors surface here).
#define CUDA_CHECK_LAUNCH()                                                                   \
  do {                                                                                        \
    const cudaError_t psgd_status_ = cudaGetLastError();                                      \
    if (psgd_status_ != cudaSuccess) [[unlikely]]                                             \
      ::psgd::detail::throw_error(__FILE__, __LINE__, "kernel launch", "a kernel launch in ", \
                                  __func__, " failed: ", cudaGetErrorString(psgd_status_));   \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                         \
    const cublasStatus_t psgd_status_ = (expr);                                                \
    if (psgd_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                                    \
      ::psgd::detail::throw_error(__FILE__, __LINE__, #expr, ::psgd::detail::call_name(#expr), \
                                  " failed: ", cublasGetStatusString(psgd_status_));           \
  } while (0)

#define CUDNN_CHECK(expr)                                                                      \
  do {                                                                                         \
    const cudnnStatus_t psgd_status_ = (expr);                                                 \
    if (psgd_status_ != CUDNN_STATUS_SUCCESS) [[unlikely]]                                     \
      ::psgd::detail::throw_error(__FILE__, __LINE__, #expr, ::psgd::detail::call_name(#expr), \
                                  " failed: ", cudnnGetErrorString(psgd_status_));             \
  } while (0)
