#!/usr/bin/env bash
# Builds psgd and runs every test: the doctest suites and the PyTorch parity checks, all
# registered with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir "${PSGD_BUILD_DIR:-build}" --output-on-failure -j"$(nproc)"
