#!/usr/bin/python3
"""Plots for psgd runs (matplotlib, PNG files).

  weights CKPT [CKPT ...] --out DIR    weight histograms per layer, one column per checkpoint
                                       (e.g. SGD beside PSGD, the reference's figure), with the
                                       quantization grid of --bits drawn over them
  curves RUN_DIR [RUN_DIR ...] --out PNG
                                       training curves from each run's metrics.jsonl

Examples:
  tools/visualize.py weights out/fashion-sgd/last.safetensors out/fashion-psgd/last.safetensors \\
      --bits 4 --out out/weights
  tools/visualize.py curves out/fashion-sgd out/fashion-psgd --out out/curves.png
"""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def conv_weights(tensors):
    """Every conv weight (4-D) and linear weight, in file order: the tensors PSGD quantizes."""
    return [n for n, t in tensors.items()
            if not n.startswith("psgd.") and n.endswith(".weight") and t.ndim in (2, 4)]


def grid(weights, bits):
    """The reference's grid for a tensor: delta = max(|min(0, min w)|, max(0, max w)) / L."""
    levels = 2 ** (bits - 1) - 1
    delta = max(abs(min(0.0, float(weights.min()))), max(0.0, float(weights.max()))) / levels
    return delta * np.arange(-levels, levels + 1)


def plot_weights(paths, bits, layers, out_dir):
    loaded = [safetensors_io.load(p)[0] for p in paths]
    names = layers or conv_weights(loaded[0])
    for name in names:
        if any(name not in t for t in loaded):
            sys.exit(f"visualize: {name} is not in every checkpoint")
    os.makedirs(out_dir, exist_ok=True)
    for name in names:
        fig, axes = plt.subplots(1, len(paths), figsize=(5 * len(paths), 3.2), squeeze=False)
        for ax, path, tensors in zip(axes[0], paths, loaded):
            w = tensors[name].astype(np.float64).ravel()
            ax.hist(w, bins=200, color="#3b6ea5")
            for level in grid(w, bits):
                ax.axvline(level, color="#c0392b", linewidth=0.6, alpha=0.7)
            ax.set_title(f"{os.path.basename(os.path.dirname(path)) or path}\n{name}", fontsize=8)
            ax.set_xlabel(f"weight (grid: {bits} bits)")
        fig.tight_layout()
        target = os.path.join(out_dir, name.replace(".", "_") + ".png")
        fig.savefig(target, dpi=110)
        plt.close(fig)
    print(f"visualize: {len(names)} histograms -> {out_dir}")


def plot_curves(run_dirs, out):
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for run in run_dirs:
        path = os.path.join(run, "metrics.jsonl")
        if not os.path.exists(path):
            sys.exit(f"visualize: {path} not found")
        rows = [json.loads(line) for line in open(path)]
        epochs = [r["epoch"] for r in rows]
        label = os.path.basename(os.path.normpath(run))
        loss_ax.plot(epochs, [r["train_loss"] for r in rows], label=f"{label} train")
        loss_ax.plot(epochs, [r["fp_loss"] for r in rows], "--", label=f"{label} test FP")
        acc_ax.plot(epochs, [100 * r["fp_acc"] for r in rows], label=f"{label} FP")
        acc_ax.plot(epochs, [100 * r["lp_acc"] for r in rows], "--", label=f"{label} LP")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 %", title="test accuracy")
    for ax in (loss_ax, acc_ax):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"visualize: curves of {len(run_dirs)} runs -> {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("weights", help="weight histograms with the quantization grid")
    w.add_argument("checkpoints", nargs="+")
    w.add_argument("--bits", type=int, default=4, choices=range(2, 9))
    w.add_argument("--layers", nargs="*", help="tensor names (default: every conv and linear weight)")
    w.add_argument("--out", required=True, help="output folder")
    c = sub.add_parser("curves", help="training curves from metrics.jsonl")
    c.add_argument("runs", nargs="+", help="psgd-train output folders")
    c.add_argument("--out", required=True, help="output PNG")
    args = parser.parse_args()
    if args.command == "weights":
        for p in args.checkpoints:
            if not os.path.exists(p):
                sys.exit(f"visualize: {p} not found")
        plot_weights(args.checkpoints, args.bits, args.layers, args.out)
    else:
        plot_curves(args.runs, args.out)


if __name__ == "__main__":
    main()
