#!/usr/bin/env bash
# The benchmarks against PyTorch (tools/bench/compare.py) for one device, and on a GPU the
# 68-epoch PSGD phase of the paper (epochs 83 to 150 at CIFAR-100's size, synthetic images, FP
# and LP evaluation every epoch) timed end to end by psgd-train.
#   tools/bench/run.sh --device cpu|cuda [--quick] [--arch "A B"] [--batch "128 512"]
#                      [--repeats N] [--rounds R] [--variant-timeout S] [--precision fp32|bf16]
#                      [--variants "eager channels_last compile cuda_graph"] [--compile-mode M]
#                      [--phase-epochs N] [--out DIR]
# --quick: one small case (CI); --arch/--batch: these cases only (default: ResNet-32 and
# VGG16-bn at batch 128 on the CPU, 128 and 512 on a GPU); --repeats, --rounds (default: 10 and 3
# on the CPU, whose load varies, 20 and 1 on a GPU), --variant-timeout, --variants,
# --compile-mode and --precision go to compare.py (bf16: psgd's bf16 mode against PyTorch AMP,
# and the phase run in bf16 too); --phase-epochs: epochs of the phase run (default 68; 0 skips).
set -euo pipefail
cd "$(dirname "$0")/../.."
device=cpu quick=0 phase_epochs=68 out=out/bench archs="" batches="" repeats="" rounds=""
extra=() phase_flags=()
while (($#)); do
  case $1 in
    --device) device=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --phase-epochs) phase_epochs=$2; shift 2 ;;
    --arch) archs=$2; shift 2 ;;
    --batch) batches=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --variant-timeout | --compile-mode) extra+=("$1" "$2"); shift 2 ;;
    # shellcheck disable=SC2206  # a list of words on purpose
    --variants) extra+=(--variants $2); shift 2 ;;
    --precision) extra+=("$1" "$2"); [[ $2 == bf16 ]] && phase_flags+=(--bf16); shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
bin=${PSGD_BIN:-$( [[ $device == cuda ]] && echo build-gpu/tools || echo build/tools )}
mkdir -p "$out"
if ((quick)); then  # both families of network, once
  archs=${archs:-resnet20 vgg16_bn} batches=${batches:-16} repeats=${repeats:-2} rounds=${rounds:-1}
  extra+=(--warmup 1)
elif [[ $device == cpu ]]; then
  archs=${archs:-resnet32 vgg16_bn} batches=${batches:-128} repeats=${repeats:-10} rounds=${rounds:-3}
else
  archs=${archs:-resnet32 vgg16_bn} batches=${batches:-128 512} repeats=${repeats:-20} rounds=${rounds:-1}
fi
# shellcheck disable=SC2206  # lists of words on purpose
cases=(--arch $archs --batch $batches --repeats "$repeats" --rounds "$rounds")
# A Python with PyTorch: Debian's (python3-torch) here, the image's own on a GPU machine.
python=${PSGD_PYTHON:-}
for candidate in /usr/bin/python3 python3; do
  [[ -z $python ]] && "$candidate" -c 'import torch' 2>/dev/null && python=$candidate
done
[[ -n $python ]] || { echo "run.sh: no python3 with PyTorch (install python3-torch)" >&2; exit 1; }
"$python" tools/bench/compare.py --bench "$bin/psgd-bench" --device "$device" --out "$out" "${cases[@]}" \
  "${extra[@]}"

if [[ $device == cuda && $phase_epochs -gt 0 ]]; then
  data=$(mktemp -d)
  "$bin/psgd-data" synth --out "$data" --format cifar100 --train 50000 --test 10000 >/dev/null
  start=$SECONDS
  "$bin/psgd-train" --data "$data" --device cuda --arch resnet32 --epochs "$phase_epochs" --w-bits 4 \
    --lambda-s 150 --first-last-quant --lr 0.01 --out "$data/run" "${phase_flags[@]}" | tail -3
  echo "PSGD phase: $phase_epochs epochs of ResNet-32 on 50,000 + 10,000 images, FP and LP evaluation" \
       "every epoch: $((SECONDS - start)) s end to end" | tee "$out/phase.txt"
  # A short run's steady epochs (after the first, which captures the graphs and picks cuDNN's
  # algorithms) give the whole phase's time.
  "$python" - "$data/run/metrics.jsonl" "$((SECONDS - start))" <<'PY' | tee -a "$out/phase.txt"
import json, statistics, sys
seconds = [json.loads(line)["seconds"] for line in open(sys.argv[1])]
total = float(sys.argv[2])
if len(seconds) >= 2:
    steady = statistics.median(seconds[1:])
    print(f"steady epoch {steady:.2f} s (first {seconds[0]:.2f} s); 68 epochs at that rate plus this run's "
          f"start-up: {68 * steady + total - sum(seconds) + seconds[0] - steady:.0f} s (target: under 60 s)")
PY
  rm -rf "$data"
fi
