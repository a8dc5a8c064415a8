#!/usr/bin/env bash
# psgd-train and psgd-eval on the emulated GPU (the PSGD_CUDA=EMULATE build), in a tiny size:
# --device auto finds the GPU, a deterministic W4 PSGD run resumed after its first epoch gives
# the uninterrupted run's checkpoint byte for byte (the captured step, the device-side optimizer
# state and the GPU loader across a restart), the NCCL path (one rank) gives the plain run's
# checkpoint byte for byte, and psgd-eval gives the same accuracies on the GPU and the CPU.
set -euo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "check_emulated_train: $1" >&2; exit 1; }

"$bin/psgd-data" synth --out "$tmp/data" --format cifar10 --train 96 --test 40 >/dev/null
common=(--data "$tmp/data" --device auto --arch resnet20 --batch-size 32 --eval-batch-size 20
        --w-bits 4 --lambda-s 150 --lr 0.05 --deterministic)
"$bin/psgd-train" "${common[@]}" --epochs 2 --out "$tmp/whole" | tee "$tmp/whole.log"
grep -q '), cuda with ' "$tmp/whole.log" || fail "--device auto did not train on the (emulated) GPU"
"$bin/psgd-train" "${common[@]}" --epochs 1 --out "$tmp/resumed" >/dev/null
"$bin/psgd-train" --resume "$tmp/resumed" --epochs 2 >/dev/null
cmp "$tmp/whole/last.safetensors" "$tmp/resumed/last.safetensors" ||
  fail "the resumed run's weights differ from the uninterrupted run's"
"$bin/psgd-train" "${common[@]}" --epochs 1 --nccl --sync-bn --out "$tmp/nccl" | tee "$tmp/nccl.log"
grep -q '^1 rank (nccl)' "$tmp/nccl.log" || fail "--nccl did not run through NCCL"
"$bin/psgd-train" "${common[@]}" --epochs 1 --sync-bn --out "$tmp/plain" >/dev/null
cmp "$tmp/plain/last.safetensors" "$tmp/nccl/last.safetensors" ||
  fail "the NCCL path's weights differ from the plain run's"

accuracies() { grep -Eo '[0-9]+\.[0-9]+%' | tr '\n' ' '; }
on_gpu=$("$bin/psgd-eval" --model "$tmp/whole/last.safetensors" --data "$tmp/data" --device cuda \
  --strict-fp32 | accuracies)
on_cpu=$("$bin/psgd-eval" --model "$tmp/whole/last.safetensors" --data "$tmp/data" --device cpu |
  accuracies)
echo "psgd-eval: GPU $on_gpu/ CPU $on_cpu"
[[ -n $on_gpu && $on_gpu == "$on_cpu" ]] || fail "psgd-eval's accuracies differ between GPU and CPU"
