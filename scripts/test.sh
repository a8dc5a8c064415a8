#!/usr/bin/env bash
# Builds psgd and runs every test: the doctest suites and the PyTorch parity checks, all
# registered with ctest, then once more with the address and undefined-behaviour sanitizers;
# then, without a GPU, the GPU suites on the CUDA emulator, and its kernel suites once more under
# its race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir "${PSGD_BUILD_DIR:-build}" --output-on-failure -j"$(nproc)"

# The CPU kernels' suites once more, compiled for the x86-64 level below the one just built: the
# kernels' vector paths differ by level (AVX-512; AVX2 with FMA; SSE4.2), so that wherever the
# machine has AVX2 two of them run.
cache="${PSGD_BUILD_DIR:-build}/CMakeCache.txt"
native_level=$(sed -n 's/^PSGD_CPU_ARCH_BUILT:INTERNAL=//p' "$cache")
case $native_level in
  x86-64-v4) lower_level=x86-64-v3 ;;
  x86-64-v3) lower_level=x86-64-v2 ;;
  *) lower_level= ;;
esac
if [[ -n $lower_level ]]; then
  lower=${PSGD_LOWER_LEVEL_BUILD_DIR:-build-$lower_level}
  cmake -S . -B "$lower" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPSGD_CUDA=OFF \
    -DPSGD_CPU_ARCH="$lower_level" >/dev/null
  kernel_suites=(kernel_math ops_values ops_gradcheck ops_bf16)
  cmake --build "$lower" -j"$(nproc)" --target "${kernel_suites[@]/#/test_}"
  ctest --test-dir "$lower" --output-on-failure -j"$(nproc)" \
    -R "^($(IFS='|'; echo "${kernel_suites[*]}"))/"
fi

# The levels above the machine's cannot run here, but their vector paths are compiled all the
# same (the kernels' and the tests' helper libraries, compiled only): an edit that breaks the
# AVX-512 code on an AVX2 machine fails here, not on a user's.
case $native_level in
  x86-64-v2) upper_levels=(x86-64-v3 x86-64-v4) ;;
  x86-64-v3) upper_levels=(x86-64-v4) ;;
  *) upper_levels=() ;;
esac
for level in "${upper_levels[@]}"; do
  upper=build-$level
  cmake -S . -B "$upper" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPSGD_CUDA=OFF \
    -DPSGD_CPU_ARCH="$level" >/dev/null
  cmake --build "$upper" -j"$(nproc)" --target psgd_kernels psgd_test_support
done

# The CPU suites once more under AddressSanitizer and UndefinedBehaviorSanitizer (the fuzzers
# have their own sanitized build).
sanitized=${PSGD_SANITIZED_BUILD_DIR:-build-asan}
PSGD_BUILD_DIR=$sanitized scripts/build.sh -DPSGD_CUDA=OFF -DPSGD_SANITIZE=ON
ctest --test-dir "$sanitized" --output-on-failure -j"$(nproc)" -E '^fuzz/'

# Where no GPU is visible (CI), the GPU suites run once more, on the CPU emulator of the CUDA
# runtime, cuBLAS and cuDNN (tests/cuda_emulator): the CUDA backend's own code, kernels included.
if nvidia-smi -L >/dev/null 2>&1; then
  exit 0
fi
if [[ ! -e /usr/local/cuda/include/cuda_runtime.h ]]; then
  echo "test.sh: no CUDA headers in /usr/local/cuda/include: the emulated GPU suites are skipped"
  exit 0
fi
emulated=${PSGD_EMULATED_BUILD_DIR:-build-emu}
cmake -S . -B "$emulated" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPSGD_CUDA=EMULATE >/dev/null
cmake --build "$emulated" -j"$(nproc)" --target test_cuda_emulator test_cuda_ops test_cuda_ops_bf16 \
  test_cuda_train psgd-train psgd-eval psgd-data
ctest --test-dir "$emulated" --output-on-failure -j"$(nproc)" -R '^cuda/'

# And the kernel suites once more with racecheck: the CUDA sources under ThreadSanitizer, which
# fails a test on two accesses of a block's threads to one address that no barrier orders. The
# cases through cuDNN and cuBLAS are left out, as gpu-check's racecheck leaves them out: they run
# the emulated libraries and the planning-time races many times over (8 of the 11 minutes here),
# and the direct convolution they may call has a case of its own.
racecheck=${PSGD_RACECHECK_BUILD_DIR:-build-race}
cmake -S . -B "$racecheck" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPSGD_CUDA=EMULATE \
  -DPSGD_CUDA_RACECHECK=ON >/dev/null
cmake --build "$racecheck" -j"$(nproc)" --target test_cuda_emulator test_cuda_ops test_cuda_ops_bf16
ctest --test-dir "$racecheck" --output-on-failure -j"$(nproc)" -L kernels \
  -E 'through cuDNN|through cuBLAS'

