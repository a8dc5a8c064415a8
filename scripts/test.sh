#!/usr/bin/env bash
# Builds psgd (Release, CUDA where nvcc is found) and runs every test: the doctest suites and
# the PyTorch parity checks, all registered with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${PSGD_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)"
