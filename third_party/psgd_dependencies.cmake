# Finds every dependency as an imported target under the psgd:: namespace. Each comes from a
# Debian package (see scripts/install-deps.sh); a missing one stops configuration with a message
# that names the package to install.

set(PSGD_DEPS_ROOT "" CACHE PATH
    "Headers and libraries staged by scripts/stage-gpu-deps.sh, for machines without our packages")

function(psgd_require found_var package what)
  if(NOT ${found_var})
    message(FATAL_ERROR "psgd: ${what} not found. Install the Debian package '${package}' "
                        "(or run scripts/install-deps.sh).")
  endif()
endfunction()

# ---- OpenBLAS: CPU GEMM -------------------------------------------------------------------
# The OpenMP build of OpenBLAS, so that BLAS and our kernels share one thread pool; with the
# pthread build, idle OpenMP threads spin against OpenBLAS's threads and steps run 2x slower.
if(PSGD_DEPS_ROOT)
  find_path(PSGD_CBLAS_INCLUDE cblas.h PATHS ${PSGD_DEPS_ROOT}/include NO_DEFAULT_PATH)
  find_library(OpenBLAS_LIBRARIES openblas PATHS ${PSGD_DEPS_ROOT}/lib NO_DEFAULT_PATH)
else()
  find_package(OpenBLAS CONFIG QUIET NO_DEFAULT_PATH
               PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp/cmake/openblas)
  if(OpenBLAS_FOUND)
    find_path(PSGD_CBLAS_INCLUDE cblas.h HINTS ${OpenBLAS_INCLUDE_DIRS} NO_DEFAULT_PATH)
  endif()
endif()
psgd_require(PSGD_CBLAS_INCLUDE libopenblas-openmp-dev "OpenBLAS built with OpenMP (cblas.h)")
add_library(psgd::blas INTERFACE IMPORTED)
target_include_directories(psgd::blas INTERFACE ${PSGD_CBLAS_INCLUDE})
target_link_libraries(psgd::blas INTERFACE ${OpenBLAS_LIBRARIES})

# ---- OpenMP: threads for the CPU kernels ------------------------------------------------------
find_package(OpenMP COMPONENTS CXX QUIET)
psgd_require(OpenMP_CXX_FOUND libgomp1 "OpenMP for C++")
add_library(psgd::openmp ALIAS OpenMP::OpenMP_CXX)

# ---- nlohmann-json and CLI11: headers only ----------------------------------------------------
if(PSGD_DEPS_ROOT)
  foreach(header_lib json cli)
    add_library(psgd::${header_lib} INTERFACE IMPORTED)
    target_include_directories(psgd::${header_lib} INTERFACE ${PSGD_DEPS_ROOT}/include)
  endforeach()
else()
  find_package(nlohmann_json 3.10 CONFIG QUIET)
  psgd_require(nlohmann_json_FOUND nlohmann-json3-dev "nlohmann-json")
  add_library(psgd::json ALIAS nlohmann_json::nlohmann_json)
  find_package(CLI11 2.1 CONFIG QUIET)
  psgd_require(CLI11_FOUND libcli11-dev "CLI11")
  add_library(psgd::cli ALIAS CLI11::CLI11)
endif()

# ---- stb: image decoding and encoding (Debian builds the implementations into libstb) ---------
find_path(PSGD_STB_INCLUDE stb_image.h PATH_SUFFIXES stb HINTS ${PSGD_DEPS_ROOT}/include)
find_library(PSGD_STB_LIBRARY stb HINTS ${PSGD_DEPS_ROOT}/lib)
if(PSGD_STB_INCLUDE AND PSGD_STB_LIBRARY)
  set(PSGD_STB_FOUND TRUE)
endif()
psgd_require(PSGD_STB_FOUND libstb-dev "stb (stb_image.h and libstb)")
add_library(psgd::stb INTERFACE IMPORTED)
target_include_directories(psgd::stb INTERFACE ${PSGD_STB_INCLUDE})
target_link_libraries(psgd::stb INTERFACE ${PSGD_STB_LIBRARY})

# ---- zlib: gzipped IDX files -----------------------------------------------------------------
if(PSGD_DEPS_ROOT)
  set(ZLIB_ROOT ${PSGD_DEPS_ROOT})
endif()
find_package(ZLIB QUIET)
psgd_require(ZLIB_FOUND zlib1g-dev "zlib")

# ---- MPI: multi-rank jobs (optional; a missing MPI builds single-rank binaries) -------------
set(PSGD_WITH_MPI OFF)
if(NOT PSGD_MPI STREQUAL "OFF")
  set(MPI_CXX_SKIP_MPICXX ON)  # the C API only: the C++ bindings are long deprecated
  find_package(MPI COMPONENTS CXX QUIET)
  if(MPI_CXX_FOUND)
    add_library(psgd::mpi ALIAS MPI::MPI_CXX)
    set(PSGD_WITH_MPI ON)
  elseif(PSGD_MPI STREQUAL "ON")
    psgd_require(MPI_CXX_FOUND libopenmpi-dev "MPI")
  endif()
endif()

# ---- Threads: the loader's prefetching thread -------------------------------------------------
find_package(Threads REQUIRED)

# ---- doctest: C++ tests -----------------------------------------------------------------------
if(PSGD_BUILD_TESTS AND PSGD_DEPS_ROOT)
  add_library(doctest::doctest INTERFACE IMPORTED)
  target_include_directories(doctest::doctest INTERFACE ${PSGD_DEPS_ROOT}/include)
  list(APPEND CMAKE_MODULE_PATH ${PSGD_DEPS_ROOT}/cmake)
elseif(PSGD_BUILD_TESTS)
  find_package(doctest CONFIG QUIET)
  psgd_require(doctest_FOUND doctest-dev "doctest")
endif()

# ---- Python with PyTorch: parity checks (Debian's interpreter, not the first python3 on PATH) -
find_program(PSGD_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(PSGD_PYTHON)
  execute_process(COMMAND ${PSGD_PYTHON} -c "import torch, numpy"
                  RESULT_VARIABLE PSGD_TORCH_MISSING OUTPUT_QUIET ERROR_QUIET)
  execute_process(COMMAND ${PSGD_PYTHON} -c "import numpy"
                  RESULT_VARIABLE PSGD_NUMPY_MISSING OUTPUT_QUIET ERROR_QUIET)
endif()
if(PSGD_PYTHON AND NOT PSGD_TORCH_MISSING)
  set(PSGD_HAVE_TORCH TRUE)
else()
  set(PSGD_HAVE_TORCH FALSE)
  message(WARNING "psgd: /usr/bin/python3 with torch and numpy not found; the PyTorch parity "
                  "tests are not registered. Install 'python3-torch python3-numpy'.")
endif()
