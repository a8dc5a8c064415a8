#!/usr/bin/env bash
# Installs every Debian package psgd needs to build, test and run. Used by .ci/run and the README.
# The CUDA toolkit is not a Debian package here: it is found under /usr/local/cuda when present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config  # toolchain
  clang libclang-rt-14-dev                      # libFuzzer for the fuzz tests
  libopenblas-openmp-dev                        # CPU GEMM (OpenMP build: shares our threads)
  doctest-dev                                   # C++ tests
  libboost-context-dev                          # fibers of the CUDA emulator (tests)
  libstb-dev                                    # image reading and writing
  zlib1g-dev                                    # gzipped IDX files
  nlohmann-json3-dev                            # safetensors headers, configs
  libcli11-dev                                  # command lines
  libopenmpi-dev openmpi-bin                    # multi-rank jobs (mpirun)
  python3-torch python3-numpy                   # PyTorch parity checks and benchmarks
  python3-matplotlib                            # tools/visualize.py
  dataset-fashion-mnist                         # the default real dataset
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
