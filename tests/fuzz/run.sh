#!/usr/bin/env bash
# Builds one libFuzzer target with clang (address and undefined-behaviour sanitizers) and fuzzes
# it for a bounded time from a small seed corpus. Usage: tests/fuzz/run.sh safetensors|cifar SECONDS
# Exits 77 (skipped) when clang with libFuzzer is not installed.
set -euo pipefail
target=$1 seconds=${2:-30}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${PSGD_FUZZ_DIR:-$root/build/fuzz}/$target
mkdir -p "$work/corpus"
clang=$(command -v clang++ || true)
if [[ -z $clang ]] || ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, long) { return 0; }' |
    "$clang" -x c++ -fsanitize=fuzzer - -o "$work/probe" 2>/dev/null; then
  echo "SKIP: clang++ with libFuzzer not found (Debian: clang libclang-rt-14-dev)"
  exit 77
fi
case $target in
  safetensors) sources=(engine/safetensors.cpp engine/temporary_files.cpp) ;;
  cifar) sources=(data/dataset.cpp) ;;
  *) echo "unknown fuzz target $target" >&2; exit 2 ;;
esac
"$clang" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$root" "$root/tests/fuzz/fuzz_$target.cpp" "${sources[@]/#/$root/}" -o "$work/fuzz_$target"

# Seeds: a valid file of each kind, so mutations start from the interesting paths.
/usr/bin/python3 - "$target" "$work/corpus" <<'PY'
import os, struct, sys
target, corpus = sys.argv[1], sys.argv[2]
if target == "safetensors":
    header = b'{"__metadata__":{"arch":"resnet20"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"n":{"dtype":"I64","shape":[],"data_offsets":[16,24]}}'
    header += b" " * (-len(header) % 8)
    data = struct.pack("<Q", len(header)) + header + bytes(range(24))
else:
    data = bytes([3]) + (bytes([4, 17]) + bytes(3072)) * 2
open(os.path.join(corpus, "seed"), "wb").write(data)
PY
"$work/fuzz_$target" -max_total_time="$seconds" -max_len=16384 -print_final_stats=0 \
  -artifact_prefix="$work/" "$work/corpus" 2>&1 | tail -n 3
echo "fuzz $target: ${seconds} s without a crash"
