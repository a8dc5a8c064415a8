# Decides whether the CUDA backend is built (PSGD_CUDA = AUTO|ON|OFF) and with which
# architectures. Sets PSGD_WITH_CUDA and, when on, the psgd::cuda target (runtime, cuBLAS, cuDNN).

set(PSGD_WITH_CUDA OFF)
set(PSGD_CUDA_SUMMARY "")
if(PSGD_CUDA STREQUAL "OFF")
  return()
endif()
if(NOT PSGD_CUDA MATCHES "^(AUTO|ON|EMULATE)$")
  message(FATAL_ERROR "psgd: PSGD_CUDA must be AUTO, ON, OFF or EMULATE (got '${PSGD_CUDA}')")
endif()

# Adds CUDA sources to a target: compiled by nvcc, or in the emulated build by the host compiler
# with the device-code header of the CPU emulator (tests/cuda_emulator).
function(psgd_add_cuda_sources target)
  target_sources(${target} PRIVATE ${ARGN})
  if(PSGD_CUDA_EMULATED)
    # Misaligned accesses, which a GPU faults on and x86 forgives, stop the test; a frame larger
    # than the fiber's stack touches the guard page below it, page by page, and faults.
    set(options -include ${PROJECT_SOURCE_DIR}/tests/cuda_emulator/device_code.h
                -Wno-unknown-pragmas -Wno-sign-compare -fsanitize=alignment
                -fno-sanitize-recover=alignment -fstack-clash-protection)
    if(PSGD_CUDA_RACECHECK)
      list(APPEND options -fsanitize=thread -g)  # -g: race reports name the source lines
    endif()
    set_source_files_properties(${ARGN} PROPERTIES LANGUAGE CXX COMPILE_OPTIONS "${options}"
                                COMPILE_DEFINITIONS PSGD_CUDA_EMULATION=1)
  else()
    target_compile_options(${target} PRIVATE
                           $<$<COMPILE_LANGUAGE:CUDA>:--extended-lambda --expt-relaxed-constexpr>)
  endif()
endfunction()

# EMULATE: the CUDA backend built for the CPU, against the CPU emulator of the CUDA runtime,
# cuBLAS, cuDNN and NCCL (one rank) in tests/cuda_emulator, so that the GPU suites run where no GPU is (CI). It
# needs the toolkit's and cuDNN's headers, not nvcc; it is a test build, never a fast one.
set(PSGD_CUDA_EMULATED OFF)
if(PSGD_CUDA_RACECHECK AND NOT PSGD_CUDA STREQUAL "EMULATE")
  message(FATAL_ERROR "psgd: PSGD_CUDA_RACECHECK=ON needs PSGD_CUDA=EMULATE (on a GPU, run "
                      "compute-sanitizer --tool racecheck instead)")
endif()
if(PSGD_CUDA STREQUAL "EMULATE")
  find_path(PSGD_CUDA_INCLUDE cuda_runtime.h HINTS /usr/local/cuda/include)
  find_path(PSGD_CUDNN_INCLUDE cudnn.h HINTS ${PSGD_CUDNN_ROOT}/include ${PSGD_CUDA_INCLUDE})
  find_package(Boost CONFIG COMPONENTS context)
  if(NOT PSGD_CUDA_INCLUDE OR NOT PSGD_CUDNN_INCLUDE OR NOT Boost_FOUND)
    message(FATAL_ERROR "psgd: PSGD_CUDA=EMULATE needs the CUDA toolkit's and cuDNN's headers "
                        "(found: '${PSGD_CUDA_INCLUDE}', '${PSGD_CUDNN_INCLUDE}') and Boost.Context "
                        "(Debian: libboost-context-dev)")
  endif()
  set(PSGD_WITH_CUDA ON)
  set(PSGD_CUDA_EMULATED ON)
  set(PSGD_WITH_NCCL ON)  # one rank
  set(PSGD_CUDA_SUMMARY " (emulated on the CPU, with one-rank NCCL: tests only)")
  if(PSGD_CUDA_RACECHECK)
    string(APPEND PSGD_CUDA_SUMMARY ", racecheck (ThreadSanitizer)")
  endif()
  return()
endif()

# nvcc is often installed outside PATH.
if(NOT DEFINED ENV{CUDACXX} AND NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(PSGD_CUDA STREQUAL "ON")
    message(FATAL_ERROR "psgd: PSGD_CUDA=ON but no CUDA compiler (nvcc) was found. Install the "
                        "CUDA toolkit or set CUDACXX.")
  endif()
  set(PSGD_CUDA_SUMMARY " (nvcc not found)")
  return()
endif()

if(NOT PSGD_CUDA_ARCHITECTURES)
  execute_process(COMMAND nvidia-smi -L RESULT_VARIABLE no_gpu OUTPUT_QUIET ERROR_QUIET)
  if(no_gpu EQUAL 0)
    set(PSGD_CUDA_ARCHITECTURES native)
  else()
    set(PSGD_CUDA_ARCHITECTURES "80;90")
  endif()
endif()
set(CMAKE_CUDA_ARCHITECTURES ${PSGD_CUDA_ARCHITECTURES})
enable_language(CUDA)
# CMake 3.25 does not know nvcc's C++20 switch (nvcc 12+ has it): teach it.
set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

find_package(CUDAToolkit REQUIRED)
set(PSGD_CUDNN_ROOT "" CACHE PATH "cuDNN's folder (include/, lib/) when it is not beside the toolkit")
set(PSGD_NCCL_ROOT "" CACHE PATH "NCCL's folder (include/, lib/) when it is not beside the toolkit")
find_path(PSGD_CUDNN_INCLUDE cudnn.h HINTS ${PSGD_CUDNN_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS})
find_library(PSGD_CUDNN_LIBRARY NAMES cudnn libcudnn.so.9
             HINTS ${PSGD_CUDNN_ROOT}/lib ${CUDAToolkit_LIBRARY_DIR})
if(NOT PSGD_CUDNN_INCLUDE OR NOT PSGD_CUDNN_LIBRARY)
  message(FATAL_ERROR "psgd: cuDNN (cudnn.h, libcudnn) not found next to the CUDA toolkit in "
                      "${CUDAToolkit_LIBRARY_DIR}. Install cuDNN 9 for CUDA ${CUDAToolkit_VERSION}.")
endif()

add_library(psgd::cuda INTERFACE IMPORTED)
target_include_directories(psgd::cuda INTERFACE ${PSGD_CUDNN_INCLUDE})
target_link_libraries(psgd::cuda INTERFACE CUDA::cudart CUDA::cublas ${PSGD_CUDNN_LIBRARY})
# All CUDA work runs on the per-thread default stream (capturable in CUDA graphs, unlike the
# legacy default stream): kernels launched without a stream and host-side runtime calls alike.
target_compile_definitions(psgd::cuda INTERFACE PSGD_WITH_CUDA=1 CUDA_API_PER_THREAD_DEFAULT_STREAM=1)
target_compile_options(psgd::cuda INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:--default-stream=per-thread>)
set(PSGD_WITH_CUDA ON)
set(PSGD_CUDA_SUMMARY " (CUDA ${CUDAToolkit_VERSION}, architectures ${PSGD_CUDA_ARCHITECTURES})")

# ---- NCCL: collectives between GPU ranks (optional) -------------------------------------------
find_path(PSGD_NCCL_INCLUDE nccl.h HINTS ${PSGD_NCCL_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS})
find_library(PSGD_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${PSGD_NCCL_ROOT}/lib ${CUDAToolkit_LIBRARY_DIR})
set(PSGD_WITH_NCCL OFF)
if(PSGD_NCCL_INCLUDE AND PSGD_NCCL_LIBRARY)
  add_library(psgd::nccl INTERFACE IMPORTED)
  target_include_directories(psgd::nccl INTERFACE ${PSGD_NCCL_INCLUDE})
  target_link_libraries(psgd::nccl INTERFACE ${PSGD_NCCL_LIBRARY})
  set(PSGD_WITH_NCCL ON)
  string(APPEND PSGD_CUDA_SUMMARY ", NCCL")
else()
  string(APPEND PSGD_CUDA_SUMMARY ", no NCCL (GPU ranks unavailable)")
endif()
