#!/usr/bin/env bash
# Configures and builds psgd (Release; CUDA where nvcc is found) into ${PSGD_BUILD_DIR:-build}.
# Extra arguments go to CMake, e.g. scripts/build.sh -DPSGD_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
build=${PSGD_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
