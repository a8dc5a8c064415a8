#!/usr/bin/env python3
"""Summarises Nsight Compute's raw CSV of one training step's kernels (scripts/gpu-check.sh's
ncu step: `ncu --import REPORT --csv --page raw`): per kernel name, its launches, total and mean
time, and how close it ran to the card's memory and compute ceilings (DRAM and SM throughput as
ncu's share of peak, achieved occupancy), the largest total first. A kernel far under both
ceilings is bound by latency or launch size; one near the DRAM ceiling is at its floor.

Usage: ncu_summary.py RAW.csv [--top N]
"""
import argparse
import csv
import re
import sys
from collections import defaultdict

TIME = "gpu__time_duration.sum"
DRAM = "dram__throughput.avg.pct_of_peak_sustained_elapsed"
SM = "sm__throughput.avg.pct_of_peak_sustained_elapsed"
OCCUPANCY = "sm__warps_active.avg.pct_of_peak_sustained_active"
NAME = "Kernel Name"
# Time units ncu may report, in microseconds.
TO_US = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3,
         "s": 1e6, "second": 1e6}


def short_name(name):
    """The kernel's name without its namespaces and its template and parameter lists."""
    name = name.replace("(anonymous namespace)", "anonymous")
    name = re.sub(r"\(.*$", "", name)  # parameters
    depth, out = 0, []
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    base = "".join(out).strip()
    return base.split("::")[-1] or name[:60]


def number(text):
    return float(text.replace(",", "")) if text not in ("", "n/a") else 0.0


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # ncu prints its own lines (==PROF==, warnings) before the table: the header names the kernel.
    start = next((i for i, r in enumerate(rows) if NAME in r), None)
    if start is None:
        sys.exit(f"ncu_summary: no '{NAME}' column in {path}")
    header, units = rows[start], rows[start + 1]
    for column in (TIME, DRAM, SM):
        if column not in header:
            sys.exit(f"ncu_summary: no '{column}' column in {path}")
    col = {c: header.index(c) for c in header}
    scale = TO_US.get(units[col[TIME]].strip().lower(), 1e-3)
    kernels = []
    for r in rows[start + 2:]:
        if len(r) < len(header) or not r[col[NAME]]:
            continue
        kernels.append({
            "name": short_name(r[col[NAME]]),
            "us": number(r[col[TIME]]) * scale,
            "dram": number(r[col[DRAM]]),
            "sm": number(r[col[SM]]),
            "occupancy": number(r[col[OCCUPANCY]]) if OCCUPANCY in col else 0.0,
        })
    return kernels


def time_weighted(kernels, key):
    """The mean of `key` over the kernels weighted by their time: what their time was spent at."""
    us = sum(k["us"] for k in kernels)
    return sum(k[key] * k["us"] for k in kernels) / us if us else 0.0


def summarise(kernels, top):
    groups = defaultdict(list)
    for k in kernels:
        groups[k["name"]].append(k)
    total = sum(k["us"] for k in kernels) or 1.0
    lines = [f"{len(kernels)} kernels, {total:.1f} us in all (each alone, as ncu replays it)", "",
             f"{'kernel':<64} {'launches':>8} {'total us':>9} {'share':>6} {'mean us':>8} "
             f"{'DRAM %':>7} {'SM %':>6} {'occup %':>8}"]
    ranked = sorted(groups.items(), key=lambda item: -sum(k["us"] for k in item[1]))
    for name, ks in ranked[:top]:
        us = sum(k["us"] for k in ks)
        dram, sm, occupancy = (time_weighted(ks, key) for key in ("dram", "sm", "occupancy"))
        lines.append(f"{name[:64]:<64} {len(ks):>8} {us:>9.1f} {100 * us / total:>5.1f}% "
                     f"{us / len(ks):>8.1f} {dram:>7.1f} {sm:>6.1f} {occupancy:>8.1f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=40, help="kernel names to list")
    args = parser.parse_args()
    print(summarise(read(args.csv), args.top))


if __name__ == "__main__":
    main()
