#!/usr/bin/env bash
# psgd-profile in a tiny size on the CPU: every layer of ResNet-20 gets its row, with the loss,
# the optimizer and the whole step beside them, and each layer's times in a step (no timing is
# judged here).
set -euo pipefail
profile=$1
out=$("$profile" --arch resnet20 --classes 10 --batch 4 --repeats 1 --rounds 1 --profiler-range)
echo "$out"
fail() { echo "check_profile: $1" >&2; exit 1; }
# 19 3x3 convolutions and 2 projection shortcuts; on the CPU the 10 batch norms followed by a ReLU
# compute it (no ReLU row is left), and each residual join computes the ReLU after it.
[[ $(grep -c ': conv2d ' <<< "$out") -eq 21 ]] || fail "not one row per convolution"
[[ $(grep -c ': batch_norm ' <<< "$out") -eq 21 ]] || fail "not one row per batch norm"
[[ $(grep -c ': batch_norm [0-9]* + relu ' <<< "$out") -eq 10 ]] ||
  fail "not one batch norm row with its ReLU per ReLU"
[[ $(grep -c ': relu' <<< "$out") -eq 0 ]] || fail "a ReLU row the batch norm before it computes"
[[ $(grep -c ': add + relu ' <<< "$out") -eq 9 ]] || fail "not one row per join with its ReLU"
grep -q '^fc: linear 64->10' <<< "$out" || fail "no row for the classifier"
grep -q '^optimizer: ' <<< "$out" || fail "no row for the optimizer"
grep -Eq '^the whole step, as training runs it +[0-9.]+ us' <<< "$out" || fail "no whole step"
grep -q '^by kind: .*conv2d' <<< "$out" || fail "no summary by kind"
grep -Eq '^sum of the layers in a step run op by op \("in step"\) +[0-9.]+ us' <<< "$out" ||
  fail "no sum of the layers in a step"
grep -q '^in step: .*conv2d' <<< "$out" || fail "no summary by kind in a step"
awk '/: conv2d / { if (!($(NF - 1) > 0 && $NF > 0)) bad = 1 } END { exit bad }' <<< "$out" ||
  fail "a convolution's row without its times in a step"
