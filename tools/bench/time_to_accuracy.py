#!/usr/bin/python3
"""Time to accuracy: psgd-train and a PyTorch training loop on the same dataset folder with the same
recipe, in one run on one machine, and the wall time each needs to reach a test accuracy.

The recipe is the reference's plain SGD training (REFERENCE.md): the network from scratch, SGD with
momentum 0.9 and weight decay 1e-4, multistep learning-rate decay, the reference's augmentation
(reflect-pad 4, horizontal flip, random 32x32 crop, normalisation), batch 128, every batch
including the last partial one, the test set evaluated in float after every epoch. The PyTorch
side is written as the authors' code trains (eager, one optimizer step per batch, the training
images and their augmentation on the device, so that no loader slows it); psgd's is psgd-train
itself, its per-epoch times read from its metrics. Each side's time through an epoch counts its
training and evaluation passes, not the process start-up, which is reported beside them.

The target accuracy is --target, or by default the lower of the two sides' best test accuracies
(so both reach it). Printed last and written as tta.json and tta.md in --out (with psgd-train's
config.json, metrics.jsonl and log): each side's curve, its time to the target, and the ratio
PyTorch / psgd (above 1: psgd gets there sooner). Both evaluate the whole test set; with
--train-subset each side trains on that many images drawn at random by its own generator. On a
GPU, psgd's context (cuDNN, cuBLAS) exists before its first epoch starts, while PyTorch creates
its handles inside its first epoch: a second or less on the PyTorch side."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import cifar_files
from compare import benchmark_model, cpu_name, synchronize

MOMENTUM, WEIGHT_DECAY, GAMMA, CROP_PAD = 0.9, 1e-4, 0.1, 4
ARCHS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16_bn"]


def learning_rate(args, epoch):
    """psgd's multistep schedule: lr x gamma for each decay epoch at or before `epoch`."""
    return args.lr * GAMMA ** sum(epoch >= m for m in args.decay_epochs)


def augment(images):
    """The reference's training transform of uint8 images (B, 3, 32, 32), before normalisation:
    reflect-pad 4, flip horizontally with p 0.5, crop 32x32 at random; floats in [0, 1]."""
    b, device = images.shape[0], images.device
    x = F.pad(images.float() / 255, (CROP_PAD,) * 4, mode="reflect")
    flip = torch.rand(b, device=device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    top, left = (torch.randint(0, 2 * CROP_PAD + 1, (b, 1), device=device) for _ in range(2))
    span = torch.arange(32, device=device)
    rows, cols = (top + span)[:, :, None], (left + span)[:, None, :]
    return x[torch.arange(b, device=device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()


def subset(split, keep, seed):
    if keep > len(split.labels):  # as psgd-train says it: more than there are is a mistake
        sys.exit(f"time_to_accuracy: --train-subset {keep}: the training set holds only {len(split.labels)} images")
    if keep <= 0 or keep == len(split.labels):
        return split
    chosen = torch.randperm(len(split.labels), generator=torch.Generator().manual_seed(seed))[:keep]
    return cifar_files.Split(split.images[chosen], split.labels[chosen])


@torch.no_grad()
def test_accuracy(model, images, labels, normalise, batch):
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for i in range(0, len(labels), batch):
        logits = model(normalise(images[i:i + batch].float() / 255))
        correct += (logits.argmax(1) == labels[i:i + batch]).sum()
    return correct.item() / len(labels)


def pytorch_run(args):
    """The PyTorch side's epochs: [{epoch, top1, seconds}] and the whole run's wall time."""
    start = time.perf_counter()
    device = args.device
    torch.manual_seed(args.seed)
    train, test, classes, mean, std = cifar_files.load(args.data)
    train = subset(train, args.train_subset, args.seed)
    images, labels = train.images.to(device), train.labels.to(device)
    test_images, test_labels = test.images.to(device), test.labels.to(device)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def normalise(x):
        return (x - mean_t) / std_t

    model = benchmark_model(args.arch, classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        synchronize(device)
        epoch_start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args, epoch)
        model.train()
        order = torch.randperm(len(labels), device=device)
        for i in range(0, len(labels), args.batch):
            chosen = order[i:i + args.batch]
            loss = F.cross_entropy(model(normalise(augment(images[chosen]))), labels[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        top1 = test_accuracy(model, test_images, test_labels, normalise, args.eval_batch)
        synchronize(device)
        epochs.append({"epoch": epoch, "top1": top1, "seconds": time.perf_counter() - epoch_start})
        print(f"PyTorch epoch {epoch}: top-1 {top1:.4f}, {epochs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    return epochs, time.perf_counter() - start


def last_line(path):
    """The log's last line naming psgd-train (its error), or its last line."""
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    named = [line for line in lines if line.startswith("psgd-train:")]
    return (named or lines or ["(no output)"])[-1]


def psgd_run(args):
    """psgd-train's epochs, as its metrics.jsonl records them, and the process's wall time. The run
    goes to a temporary folder (its checkpoints are not wanted); its config and metrics are kept."""
    run_dir = tempfile.mkdtemp(prefix="psgd-tta-")
    command = [args.psgd_train, "--data", args.data, "--arch", args.arch, "--epochs", str(args.epochs),
               "--lr", str(args.lr), "--decay-epochs", *map(str, args.decay_epochs or [args.epochs + 1]),
               "--batch-size", str(args.batch), "--eval-batch-size", str(args.eval_batch), "--w-bits", "32",
               "--lambda-s", "0", "--device", args.device, "--threads", str(args.threads),
               "--seed", str(args.seed), "--train-subset", str(args.train_subset), "--out", run_dir]
    log_path = os.path.join(args.out, "psgd-train.log")
    try:
        start = time.perf_counter()
        with open(log_path, "w") as log:
            returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - start
        if returncode != 0:
            sys.exit(f"time_to_accuracy: psgd-train exited with {returncode} ({log_path}): {last_line(log_path)}")
        for name in ("config.json", "metrics.jsonl"):
            if os.path.isfile(os.path.join(run_dir, name)):
                shutil.copy(os.path.join(run_dir, name), args.out)
        metrics = os.path.join(run_dir, "metrics.jsonl")
        records = []
        if os.path.isfile(metrics):
            with open(metrics) as f:
                records = [json.loads(line) for line in f if line.strip()]
        if len(records) != args.epochs:
            sys.exit(f"time_to_accuracy: psgd-train recorded {len(records)} of {args.epochs} epochs ({log_path})")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return [{"epoch": r["epoch"], "top1": r["fp_acc"], "seconds": r["seconds"]} for r in records], seconds


def time_to(epochs, target):
    """(seconds through the first epoch reaching `target`, that epoch), or (None, None)."""
    elapsed = 0.0
    for e in epochs:
        elapsed += e["seconds"]
        if e["top1"] >= target:
            return elapsed, e["epoch"]
    return None, None


def side(epochs, process_seconds, target):
    seconds, epoch = time_to(epochs, target)
    return {"epochs": epochs, "best_top1": max(e["top1"] for e in epochs),
            "train_and_eval_s": sum(e["seconds"] for e in epochs), "process_s": process_seconds,
            "time_to_target_s": seconds, "epoch_at_target": epoch}


def markdown(result):
    target = result["target"]
    lines = [result["header"], "",
             f"| side | best top-1 | time to {target:.2%} top-1 (epoch) | training + evaluation, "
             "all epochs | process, start to end |", "|---|---|---|---|---|"]
    for name, s in (("psgd", result["psgd"]), ("PyTorch eager", result["pytorch"])):
        reached = (f"{s['time_to_target_s']:.1f} s ({s['epoch_at_target']})" if s["time_to_target_s"] is not None
                   else "not reached")
        lines.append(f"| {name} | {s['best_top1']:.2%} | {reached} | {s['train_and_eval_s']:.1f} s | "
                     f"{s['process_s']:.1f} s |")
    lines += ["", "| epoch | psgd top-1 | psgd s | PyTorch top-1 | PyTorch s |", "|---|---|---|---|---|"]
    for ours, theirs in zip(result["psgd"]["epochs"], result["pytorch"]["epochs"]):
        lines.append(f"| {ours['epoch']} | {ours['top1']:.2%} | {ours['seconds']:.1f} | {theirs['top1']:.2%} | "
                     f"{theirs['seconds']:.1f} |")
    ratio = result["ratio"]
    lines += ["", f"Time to {target:.2%} top-1, PyTorch / psgd: "
              + (f"**{ratio:.2f}x** (above 1: psgd gets there sooner)." if ratio else "n/a (a side never reached it).")]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--psgd-train", help="path to psgd-train (default: build/tools/, or build-gpu/tools/ with "
                        "--device cuda)")
    parser.add_argument("--data", required=True, help="dataset folder (psgd-data output or CIFAR binary files)")
    parser.add_argument("--arch", choices=ARCHS, default="resnet20")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--decay-epochs", type=int, nargs="*", default=[],
                        help="epochs from which the learning rate is multiplied by 0.1 (default: none)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eval-batch", type=int, default=100)
    parser.add_argument("--train-subset", type=int, default=0, help="train on this many images (0: all)")
    parser.add_argument("--target", type=float, help="top-1 to reach, in (0, 1] (default: the lower best)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of each side (0: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/tta")
    args = parser.parse_args()
    args.psgd_train = args.psgd_train or f"{'build-gpu' if args.device == 'cuda' else 'build'}/tools/psgd-train"
    args.threads = args.threads or os.cpu_count()
    if not os.access(args.psgd_train, os.X_OK):
        sys.exit(f"time_to_accuracy: {args.psgd_train} not found; build first (scripts/build.sh)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("time_to_accuracy: --device cuda but PyTorch sees no GPU")
    if args.target is not None and not 0 < args.target <= 1:
        sys.exit(f"time_to_accuracy: --target {args.target} is not in (0, 1]")
    if min(args.epochs, args.batch, args.eval_batch, args.threads) < 1 or args.train_subset < 0:
        sys.exit("time_to_accuracy: --epochs, --batch and --eval-batch must be positive, --threads and "
                 "--train-subset not negative")
    if not os.path.isdir(args.data):
        sys.exit(f"time_to_accuracy: {args.data}: no such dataset folder")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        sys.exit(f"time_to_accuracy: --out {args.out} is a file, not a folder")
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    os.makedirs(args.out, exist_ok=True)

    print(f"psgd-train: {args.arch}, {args.epochs} epochs ...", file=sys.stderr, flush=True)
    ours, ours_seconds = psgd_run(args)
    print(f"PyTorch: {args.arch}, {args.epochs} epochs ...", file=sys.stderr, flush=True)
    theirs, theirs_seconds = pytorch_run(args)
    target = args.target if args.target is not None else min(max(e["top1"] for e in run) for run in (ours, theirs))
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"{cpu_name()}, {args.threads} threads"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "torch": torch.__version__, "commit": commit,
              "device": args.device, "arch": args.arch, "data": os.path.abspath(args.data),
              "recipe": {k: getattr(args, k) for k in ("epochs", "lr", "decay_epochs", "batch", "eval_batch",
                                                        "train_subset", "seed")},
              "target": target, "psgd": side(ours, ours_seconds, target),
              "pytorch": side(theirs, theirs_seconds, target)}
    mine, other = result["psgd"]["time_to_target_s"], result["pytorch"]["time_to_target_s"]
    result["ratio"] = other / mine if mine and other else None
    result["header"] = (f"{result['date']}, {machine}, PyTorch {torch.__version__}, psgd {commit}: {args.arch} on "
                        f"{os.path.basename(os.path.normpath(args.data))}, {args.epochs} epochs, batch {args.batch}, "
                        f"lr {args.lr}" + (f", decay at {args.decay_epochs}" if args.decay_epochs else ""))
    with open(os.path.join(args.out, "tta.json"), "w") as f:
        json.dump(result, f, indent=2)
    table = markdown(result)
    with open(os.path.join(args.out, "tta.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
