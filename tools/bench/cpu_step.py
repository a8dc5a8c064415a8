#!/usr/bin/python3
"""CPU training-step benchmark: psgd's CPU backend beside PyTorch CPU, same network, batch and
threads, in one run. A step is forward (training mode), mean cross-entropy and backward; the
optimizer update is left out on both sides. Reports the median of the timed steps after warm-up
and the ratio PyTorch time / psgd time (above 1: psgd is faster).

Usage: tools/bench/cpu_step.py --bench build/tools/psgd-bench-step [--threads 2] [--batch 128]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import reference_models  # noqa: E402


def pytorch_step_ms(arch, classes, batch, threads, warmup, repeats):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = reference_models.build(arch, classes).train()
    images = torch.rand(batch, 3, 32, 32) * 2 - 1
    labels = torch.arange(batch) % classes
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
        print(f"\rPyTorch {arch} step {i + 1}/{warmup + repeats}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", default="build/tools/psgd-bench-step",
                        help="path to psgd-bench-step")
    parser.add_argument("--arch", default="resnet32")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"cpu_step: {args.bench} not found; build first (scripts/test.sh builds it)")

    ours = json.loads(subprocess.run(
        [args.bench, "--arch", args.arch, "--classes", str(args.classes), "--batch",
         str(args.batch), "--threads", str(args.threads), "--warmup", str(args.warmup),
         "--repeats", str(args.repeats), "--json"],
        check=True, capture_output=True, text=True).stdout)
    theirs = pytorch_step_ms(args.arch, args.classes, args.batch, args.threads, args.warmup,
                             args.repeats)
    ratio = theirs / ours["median_ms"]
    result = {"arch": args.arch, "batch": args.batch, "threads": args.threads,
              "psgd_ms": round(ours["median_ms"], 1), "pytorch_ms": round(theirs, 1),
              "pytorch_version": torch.__version__, "speedup": round(ratio, 3)}
    print(f"{'':<10}{'ms/step':>10}{'images/s':>10}")
    print(f"{'psgd':<10}{ours['median_ms']:>10.1f}{1000 * args.batch / ours['median_ms']:>10.0f}")
    print(f"{'PyTorch':<10}{theirs:>10.1f}{1000 * args.batch / theirs:>10.0f}")
    print(f"{args.arch}, batch {args.batch}, {args.threads} threads: psgd / PyTorch throughput "
          f"= {ratio:.2f}x ({'faster' if ratio >= 1 else 'slower'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
