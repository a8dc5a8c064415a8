#!/usr/bin/env bash
# Every GPU check in one call, for a machine with one GPU and no network (the device tool), in
# order of importance and within a time budget (GPU_CHECK_BUDGET seconds, default 420; a step
# that would not fit is reported as skipped, one that hits its own limit as TIME):
#   card        the card, driver and CUDA libraries present (always);
#   build       a build for that card, the GPU suites and the binaries first (always);
#   pdl         programmatic dependent launch: a captured training step against the op-by-op one,
#               then, should that fail, with PSGD_PDL=0, which the later steps then keep (always);
#   suites      the GPU suites: every CUDA op and whole training steps against the CPU;
#   train       psgd-train and psgd-eval on the GPU, the NCCL path against the run without it,
#               and a bf16 epoch;
#   bench       ResNet-32 at batch 128 against every PyTorch variant (torch.compile in
#               reduce-overhead mode: max-autotune's autotuning alone would outlast the budget)
#               and 3 epochs of the PSGD phase;
#   bench-vgg   VGG16-bn at batch 128 against PyTorch eager, channels_last and CUDA graphs;
#   bench-512   both networks at batch 512 against PyTorch eager, channels_last and CUDA graphs
#               (with cuDNN's algorithm choices logged);
#   profile     psgd-profile: each layer's GPU time in ResNet-32's and VGG16-bn's steps at batch
#               128 (ResNet-32 also with cuDNN alone and with psgd's direct convolutions
#               alone, and in bf16 with the race, cuDNN's bf16 kernels alone and its float32
#               ones on widened copies alone; VGG16-bn at 512 too; ResNet-32 first without
#               programmatic dependent launches), beside the whole captured step, with cuDNN's
#               algorithm choices (profile.log);
#   ncu         Nsight Compute's counters over one op-by-op step of ResNet-32 and of VGG16-bn at
#               batch 128: each kernel's time and its share of the DRAM and SM ceilings
#               (ncu.log; tools/bench/ncu_summary.py);
#   sanitizer   compute-sanitizer memcheck and racecheck over the kernel tests, one line each;
#   bench-bf16  the bf16 mode against PyTorch AMP (ResNet-32, batch 128);
#   tta         time to accuracy: ResNet-32 trained from scratch by psgd-train and by PyTorch
#               eager on synthetic data of CIFAR-100's size, 4 epochs (tta/tta.md);
#   bench-autotune  ResNet-32 at batch 128 against torch.compile in max-autotune mode (its
#               autotuning takes minutes: only when GPU_CHECK_STEPS names it, with a budget of
#               ~450 s for it alone);
#   tests       the rest of the build and the whole test suite.
# GPU_CHECK_STEPS="suites sanitizer" (say) runs only those after card and build, in that order:
# for a first call that puts correctness first, or a second that completes what the first could not.
# Logs are written to out/gpu-check/ (summary.txt, a log per kind of step, bench*/ with the
# tables).
# The device tool brings back at most 8 files from $OUT, so after every step (a run killed at its
# limit keeps what finished) $OUT gets: summary.txt, logs.tar.gz (everything) and each
# benchmark's results.md as bench-results.md, bench-vgg-results.md, bench-512-results.md,
# bench-bf16-results.md, bench-autotune-results.md, and tta.md. A failed step's last lines go to
# stdout too.
# Exits non-zero if a step failed.
#
# Here, first:   scripts/stage-gpu-deps.sh        (our Debian headers and libraries -> .gpu-deps)
# Then, device:  run(command="scripts/gpu-check.sh", carry=[".gpu-deps"], timeout_s=480)
set -uo pipefail
cd "$(dirname "$0")/.."
# The toolkit's programs (nvcc, compute-sanitizer) where the image leaves them off the PATH.
[[ -d /usr/local/cuda/bin ]] && export PATH=$PATH:/usr/local/cuda/bin
out=out/gpu-check
returned=${OUT:-}
build=build-gpu
budget=${GPU_CHECK_BUDGET:-420}
all_steps="suites train bench bench-vgg bench-512 profile ncu sanitizer bench-bf16 tta tests bench-autotune"
# bench-autotune needs most of a call of its own: only when asked for.
steps=${GPU_CHECK_STEPS:-${all_steps% bench-autotune}}
for name in $steps; do
  [[ " $all_steps " == *" $name "* ]] || { echo "gpu-check: no step '$name' (steps: $all_steps)" >&2; exit 2; }
done
rm -rf "$out"
mkdir -p "$out"
: > "$out/summary.txt"
status=0

# pack: what the device tool brings back, in at most 8 files (see above).
pack() {
  [[ -n $returned ]] || return 0
  cp "$out/summary.txt" "$returned/"
  # Written aside, then moved: a run killed while packing keeps the previous archive whole.
  tar -czf "$returned/logs.tar.gz.part" -C "$(dirname "$out")" "$(basename "$out")" &&
    mv "$returned/logs.tar.gz.part" "$returned/logs.tar.gz"
  local name
  for name in bench bench-vgg bench-512 bench-bf16 bench-autotune; do
    [[ -f $out/$name/results.md ]] && cp "$out/$name/results.md" "$returned/$name-results.md"
  done
  [[ -f $out/tta/tta.md ]] && cp "$out/tta/tta.md" "$returned/tta.md"
  return 0
}

# step NAME LOG LIMIT COMMAND...: runs COMMAND with at most LIMIT seconds (less if the budget
# has less left), logging to LOG.
step() {
  local name=$1 log=$2 limit=$3
  shift 3
  local left=$((budget - SECONDS))
  if ((left < 20)); then
    echo "skip  $name (out of time)" | tee -a "$out/summary.txt"
    return
  fi
  ((limit > left)) && limit=$left
  local start=$SECONDS
  # timeout runs programs, not shell functions: the functions below are exported to a bash.
  echo "-- $name" >> "$out/$log"
  local first_line
  first_line=$(($(wc -l < "$out/$log") + 1))
  timeout "$limit" bash -c '"$@"' step "$@" >> "$out/$log" 2>&1
  local rc=$?
  if ((rc == 0)); then
    echo "ok    $name ($((SECONDS - start)) s)" | tee -a "$out/summary.txt"
  else
    local verdict=FAIL
    ((rc == 124)) && verdict=TIME
    echo "$verdict  $name ($((SECONDS - start)) s of at most $limit; see $log)" |
      tee -a "$out/summary.txt"
    tail -n "+$first_line" "$out/$log" | tail -n 25 | sed 's/^/      | /'
    status=1
  fi
  pack
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

configure_and_build_gpu_parts() {
  local deps=() root
  [[ -d .gpu-deps ]] && deps+=("-DPSGD_DEPS_ROOT=$PWD/.gpu-deps")
  root=$(cudnn_root)
  [[ -n $root ]] && deps+=("-DPSGD_CUDNN_ROOT=$root")
  root=$(nccl_root)
  [[ -n $root ]] && deps+=("-DPSGD_NCCL_ROOT=$root")
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPSGD_CUDA=ON \
    -DPSGD_CUDA_ARCHITECTURES="${PSGD_CUDA_ARCH:-native}" "${deps[@]}" &&
    cmake --build "$build" -j"$(nproc)" --target test_cuda_ops test_cuda_ops_bf16 test_cuda_train \
      psgd-train psgd-eval psgd-data psgd-bench psgd-profile
}

# Every GPU test case in a process of its own, the never-run bf16 suite first: a kernel fault
# poisons its process's CUDA context, so one broken case cannot fail the cases after it. A
# case's name becomes its filter with doctest's separators and wildcards (, * ? [ ]) as '?'.
# cuDNN's choices are logged for the record; the failed cases are listed last.
gpu_suites() {
  local failed=() suite name filter log listing rc cases
  for suite in test_cuda_ops_bf16 test_cuda_ops test_cuda_train; do
    listing=$("$build/tests/$suite" -ltc -nv 2>&1)
    cases=0
    while IFS= read -r name; do
      ((++cases))
      filter=$(sed 's/[][,*?]/?/g' <<< "$name")
      log=$(PSGD_CUDNN_LOG=1 "$build/tests/$suite" -tc="$filter" 2>&1)
      rc=$?
      echo "-- $suite: $name"
      echo "$log"
      ((rc == 0)) && grep -q 'test cases: *1 | *1 passed' <<< "$log" || failed+=("$suite: $name")
    done < <(sed -n '/^====/,/^====/p' <<< "$listing" | grep -v '^====')
    ((cases > 0)) || failed+=("$suite: no test case listed ($(head -1 <<< "$listing"))")
  done
  ((${#failed[@]} == 0)) && return 0
  printf 'FAILED  %s\n' "${failed[@]}"
  return 1
}

# The sanitizers slow kernels 10-100x: racecheck covers our own kernels (the library calls have
# no shared memory of ours), memcheck of the training suite the GPU loader, one captured step and
# captured evaluation.
sanitizer() {
  local cs
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  [[ -n $cs ]] || { echo "no compute-sanitizer on this machine"; return 1; }
  "$cs" --error-exitcode 1 --tool "$1" "$build/tests/$2" "${@:3}"
}

# psgd-train on the GPU: a short PSGD run (its epoch lines give the throughput) and psgd-eval on
# both devices; then the NCCL path: one rank through NCCL must give the weights of the run
# without it, bit for bit.
train_on_gpu() {
  local bin=$build/tools tmp
  tmp=$(mktemp -d)
  "$bin/psgd-data" synth --out "$tmp/data" --format cifar100 --train 20000 --test 2000 &&
    "$bin/psgd-train" --data "$tmp/data" --device cuda --arch resnet32 --epochs 3 --w-bits 4 \
      --lambda-s 150 --first-last-quant --lr 0.05 --out "$tmp/psgd" &&
    echo "-- psgd-eval on the GPU, then on the CPU (the accuracies should agree):" &&
    "$bin/psgd-eval" --model "$tmp/psgd/last.safetensors" --data "$tmp/data" --device cuda --strict-fp32 &&
    "$bin/psgd-eval" --model "$tmp/psgd/last.safetensors" --data "$tmp/data" --device cpu &&
    local common=(--data "$tmp/data" --device cuda --arch resnet20 --epochs 1 --train-subset 4096
                  --deterministic --sync-bn --w-bits 4 --lambda-s 150) &&
    "$bin/psgd-train" "${common[@]}" --out "$tmp/plain" &&
    "$bin/psgd-train" "${common[@]}" --nccl --out "$tmp/nccl" &&
    cmp "$tmp/plain/last.safetensors" "$tmp/nccl/last.safetensors" &&
    echo "NCCL path: identical weights" &&
    echo "-- the bf16 mode: one epoch, evaluated in bf16 on the GPU and in float32 on the CPU:" &&
    "$bin/psgd-train" --data "$tmp/data" --device cuda --arch resnet32 --epochs 1 --w-bits 4 \
      --lambda-s 150 --first-last-quant --lr 0.05 --bf16 --out "$tmp/bf16" &&
    "$bin/psgd-eval" --model "$tmp/bf16/last.safetensors" --data "$tmp/data" --device cuda --bf16 &&
    "$bin/psgd-eval" --model "$tmp/bf16/last.safetensors" --data "$tmp/data" --device cpu
}

time_to_accuracy() {
  local data rc
  data=$(mktemp -d)
  "$build/tools/psgd-data" synth --out "$data" --format cifar100 --train 50000 --test 10000 >/dev/null &&
    python3 tools/bench/time_to_accuracy.py --psgd-train "$build/tools/psgd-train" --data "$data" \
      --arch resnet32 --epochs 4 --device cuda --out "$out/tta"
  rc=$?
  rm -rf "$data"
  return "$rc"
}

profile_steps() {
  local run
  echo "== without programmatic dependent launches (PSGD_PDL=0), to compare with the next run"
  PSGD_PDL=0 "$build/tools/psgd-profile" --device cuda --arch resnet32 --batch 128 --repeats 20 \
    --rounds 5 || return 1
  echo
  for run in "--arch resnet32 --batch 128" "--arch resnet32 --batch 128 --conv cudnn" \
             "--arch resnet32 --batch 128 --conv direct" \
             "--arch resnet32 --batch 128 --conv tensor-core" "--arch vgg16_bn --batch 128" \
             "--arch resnet32 --batch 128 --bf16" "--arch resnet32 --batch 128 --bf16 --conv cudnn" \
             "--arch resnet32 --batch 128 --bf16 --conv widened" \
             "--arch resnet32 --batch 128 --bf16 --conv tensor-core" "--arch vgg16_bn --batch 512"; do
    # shellcheck disable=SC2086  # a list of words on purpose
    PSGD_CUDNN_LOG=1 "$build/tools/psgd-profile" --device cuda $run --repeats 20 --rounds 5 ||
      return 1
    echo
  done
}

# The counters of one step's kernels, recorded between psgd-profile's cudaProfilerStart and Stop
# (the reports stay out of the logs: only their CSV and summary go back).
ncu_counters() {
  local ncu arch
  ncu=$(command -v ncu || find /opt/nvidia /usr/local -name ncu -type f 2>/dev/null | head -1)
  [[ -n $ncu ]] || { echo "no ncu on this machine"; return 1; }
  for arch in resnet32 vgg16_bn; do
    "$ncu" --clock-control none --profile-from-start off -f -o "/tmp/ncu-$arch" --metrics \
      gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active \
      "$build/tools/psgd-profile" --device cuda --arch "$arch" --batch 128 --repeats 1 --rounds 1 \
      --profiler-range &&
      "$ncu" --import "/tmp/ncu-$arch.ncu-rep" --csv --page raw --print-units base \
        > "$out/ncu-$arch.csv" &&
      python3 tools/bench/ncu_summary.py "$out/ncu-$arch.csv" || return 1
    echo
  done
}

rest_of_build_and_tests() {
  cmake --build "$build" -j"$(nproc)" &&
    ctest --test-dir "$build" --output-on-failure -j8 -E '^fuzz/'
}

export out build
export -f card cudnn_root nccl_root configure_and_build_gpu_parts gpu_suites sanitizer train_on_gpu \
  time_to_accuracy profile_steps ncu_counters rest_of_build_and_tests

step "card and toolkit" card.txt 30 card
step "build for this card (GPU suites and binaries)" build.log 240 configure_and_build_gpu_parts
# run_step NAME: one of all_steps.
run_step() {
  case $1 in
    suites) step "GPU suites (every op, whole steps, evaluation, loader)" gpu-tests.log 150 gpu_suites ;;
    train) step "psgd-train and psgd-eval on the GPU, with and without NCCL, and bf16" train.log 100 \
      train_on_gpu ;;
    bench) step "ResNet-32 against PyTorch (batch 128), PSGD phase (3 epochs)" bench.log 170 \
      tools/bench/run.sh --device cuda --arch resnet32 --batch 128 --repeats 10 \
        --compile-mode reduce-overhead --variant-timeout 90 --phase-epochs 3 --out "$out/bench" ;;
    bench-vgg) step "VGG16-bn against PyTorch (batch 128)" bench-vgg.log 70 \
      tools/bench/run.sh --device cuda --arch vgg16_bn --batch 128 --repeats 10 \
        --variants "eager channels_last cuda_graph" --variant-timeout 30 --phase-epochs 0 \
        --out "$out/bench-vgg" ;;
    bench-512) step "both networks against PyTorch (batch 512)" bench-512.log 120 \
      env PSGD_CUDNN_LOG=1 tools/bench/run.sh --device cuda --arch "resnet32 vgg16_bn" --batch 512 --repeats 10 \
        --variants "eager channels_last cuda_graph" --variant-timeout 30 --phase-epochs 0 \
        --out "$out/bench-512" ;;
    profile) step "where the step's time goes (psgd-profile)" profile.log 120 profile_steps ;;
    ncu) step "hardware counters of each kernel of a step (ncu)" ncu.log 150 ncu_counters ;;
    sanitizer)
      step "memcheck: every op" sanitizer.log 100 sanitizer memcheck test_cuda_ops
      step "racecheck: our kernels" sanitizer.log 60 sanitizer racecheck test_cuda_ops \
        -tce='*cuDNN*,*cuBLAS*'
      step "memcheck: bf16 kernels" sanitizer.log 50 sanitizer memcheck test_cuda_ops_bf16 \
        -tc='*elementwise*,*batch norm*,*pooling*,*softmax*'
      step "memcheck: loader, captured step and evaluation" sanitizer.log 50 sanitizer memcheck \
        test_cuda_train -tc='*GPU loader*,*float-weight*,*cuda evaluation*' ;;
    bench-bf16) step "bf16 against PyTorch AMP (ResNet-32, batch 128)" bench-bf16.log 90 \
      tools/bench/run.sh --device cuda --arch resnet32 --batch 128 --repeats 10 --precision bf16 \
        --variants "eager channels_last cuda_graph" --variant-timeout 30 --phase-epochs 0 \
        --out "$out/bench-bf16" ;;
    tta) step "time to accuracy against PyTorch eager (ResNet-32, 4 epochs)" tta.log 120 \
      time_to_accuracy ;;
    tests) step "rest of the build and the whole test suite" tests.log 240 rest_of_build_and_tests ;;
    bench-autotune) step "ResNet-32 against torch.compile max-autotune (batch 128)" \
      bench-autotune.log 420 \
      tools/bench/run.sh --device cuda --arch resnet32 --batch 128 --repeats 10 --variants compile \
        --compile-mode max-autotune --variant-timeout 400 --phase-epochs 0 \
        --out "$out/bench-autotune" ;;
  esac
}

# Programmatic dependent launch first, as every later step relies on it: one captured training
# step against the op-by-op one. Where that fails and passes with PSGD_PDL=0, the later steps run
# with PSGD_PDL=0, so that the budget still measures the rest (the failure stays reported).
pdl_check() {
  local captured_step="cuda training: the captured step replays exactly what the op-by-op step computes"
  step "programmatic dependent launch: $1" pdl.log 60 env "${@:2}" "$build/tests/test_cuda_train" \
    -tc="$captured_step"
  [[ $(tail -1 "$out/summary.txt") == ok* ]]
}

if [[ -x $build/tests/test_cuda_ops ]]; then
  if ! pdl_check "a captured step against the op-by-op one" &&
    pdl_check "the same with PSGD_PDL=0" PSGD_PDL=0; then
    export PSGD_PDL=0
    echo "note  the steps below run with PSGD_PDL=0" | tee -a "$out/summary.txt"
  fi
  for name in $steps; do
    run_step "$name"
  done
fi
echo "gpu-check: $([[ $status -eq 0 ]] && echo passed || echo FAILED) in $SECONDS s; logs in $out" |
  tee -a "$out/summary.txt"
pack
for name in bench bench-vgg bench-512 bench-bf16 bench-autotune; do
  [[ -f $out/$name/results.md ]] && { echo "-- $name/results.md"; cat "$out/$name/results.md"; }
done
[[ -f $out/tta/tta.md ]] && { echo "-- tta/tta.md"; cat "$out/tta/tta.md"; }
exit $status
