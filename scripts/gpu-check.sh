#!/usr/bin/env bash
# Every GPU check in one call, for a machine with one GPU and no network (the device tool):
# the card, driver and CUDA libraries present; a build for that card; the whole test suite
# (the GPU suites compare every CUDA op and whole training steps with the CPU); compute-sanitizer
# (memcheck and racecheck) over the kernel tests; psgd-train on the GPU, through NCCL and
# without; the benchmarks against PyTorch. Logs go to $OUT (default out/gpu-check): summary.txt,
# card.txt, build.log, tests.log, sanitizer.log, train.log, bench.log. Exits non-zero if any
# step failed.
#
# Here, first:   scripts/stage-gpu-deps.sh        (our Debian headers and libraries -> .gpu-deps)
# Then, device:  run(command="scripts/gpu-check.sh", carry=[".gpu-deps"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu-check}
build=build-gpu
mkdir -p "$out"
: > "$out/summary.txt"
status=0

step() {
  local name=$1 log=$2
  shift 2
  local start=$SECONDS
  if "$@" >> "$out/$log" 2>&1; then
    echo "ok    $name ($((SECONDS - start)) s)" | tee -a "$out/summary.txt"
  else
    echo "FAIL  $name ($((SECONDS - start)) s; see $log)" | tee -a "$out/summary.txt"
    status=1
  fi
}

card() {
  nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  command -v nvcc && nvcc --version
  echo "-- CUDA libraries found:"
  find / -xdev \( -name 'cudnn.h' -o -name 'cublas_v2.h' -o -name 'nccl.h' -o -name 'libcudnn.so*' \
    -o -name 'libnccl.so*' -o -name 'libcublas.so*' \) 2>/dev/null | sort | head -40
  command -v compute-sanitizer
}

cudnn_root() {  # cuDNN from the toolkit, else from the pip wheel of the image
  [[ -f /usr/local/cuda/include/cudnn.h ]] && return
  python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))' 2>/dev/null
}

nccl_root() {  # NCCL from the toolkit, else from the pip wheel of the image
  [[ -f /usr/local/cuda/include/nccl.h ]] && return
  python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null
}

configure_and_build() {
  local deps=() root
  [[ -d .gpu-deps ]] && deps+=("-DPSGD_DEPS_ROOT=$PWD/.gpu-deps")
  root=$(cudnn_root)
  [[ -n $root ]] && deps+=("-DPSGD_CUDNN_ROOT=$root")
  root=$(nccl_root)
  [[ -n $root ]] && deps+=("-DPSGD_NCCL_ROOT=$root")
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPSGD_CUDA=ON \
    -DPSGD_CUDA_ARCHITECTURES="${PSGD_CUDA_ARCH:-native}" "${deps[@]}" &&
    cmake --build "$build" -j"$(nproc)"
}

# The sanitizers slow kernels 10-100x: racecheck covers our own kernels (the library calls have
# no shared memory of ours), memcheck of the training suite the GPU loader and one captured step.
sanitize() {
  local cs=(compute-sanitizer --error-exitcode 1)
  timeout 200 "${cs[@]}" --tool memcheck "$build/tests/test_cuda_ops" &&
    timeout 120 "${cs[@]}" --tool racecheck "$build/tests/test_cuda_ops" -tce='*cuDNN*,*cuBLAS*' &&
    timeout 120 "${cs[@]}" --tool memcheck "$build/tests/test_cuda_train" -tc='*GPU loader*,*float-weight*'
}

# psgd-train on the GPU: a short PSGD run (its epoch lines give the throughput), then the NCCL
# path: one rank through NCCL must give the weights of the run without it, bit for bit.
train_on_gpu() {
  local bin=$build/tools tmp
  tmp=$(mktemp -d)
  "$bin/psgd-data" synth --out "$tmp/data" --format cifar100 --train 20000 --test 2000 &&
    "$bin/psgd-train" --data "$tmp/data" --device cuda --arch resnet32 --epochs 3 --w-bits 4 \
      --lambda-s 150 --first-last-quant --lr 0.05 --out "$tmp/psgd" &&
    echo "-- psgd-eval on the GPU, then on the CPU (the accuracies should agree):" &&
    "$bin/psgd-eval" --model "$tmp/psgd/last.safetensors" --data "$tmp/data" --device cuda &&
    "$bin/psgd-eval" --model "$tmp/psgd/last.safetensors" --data "$tmp/data" --device cpu &&
    local common=(--data "$tmp/data" --device cuda --arch resnet20 --epochs 1 --train-subset 4096
                  --deterministic --sync-bn --w-bits 4 --lambda-s 150) &&
    "$bin/psgd-train" "${common[@]}" --out "$tmp/plain" &&
    "$bin/psgd-train" "${common[@]}" --nccl --out "$tmp/nccl" &&
    cmp "$tmp/plain/last.safetensors" "$tmp/nccl/last.safetensors" &&
    echo "NCCL path: identical weights"
}

step "card and toolkit" card.txt card
step "build for this card" build.log configure_and_build
if [[ -x $build/tests/test_cuda_ops ]]; then
  step "test suite" tests.log timeout 240 ctest --test-dir "$build" --output-on-failure -j8 -E '^fuzz/'
  step "compute-sanitizer" sanitizer.log sanitize
  step "psgd-train on the GPU, with and without NCCL" train.log train_on_gpu
  step "benchmarks against PyTorch" bench.log timeout 240 tools/bench/run.sh --device cuda \
    --arch "resnet32 vgg16_bn" --batch 128 --phase-epochs 4 --out "$out/bench"

fi
echo "gpu-check: $([[ $status -eq 0 ]] && echo passed || echo FAILED); logs in $out" | tee -a "$out/summary.txt"
exit $status
