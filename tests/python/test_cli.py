#!/usr/bin/python3
"""psgd-train and psgd-eval end to end on a small synthetic dataset: training with the
reference's option spellings, outputs, bit-identical resume, a checkpoint PyTorch loads
strictly, evaluation, and a clear one-line error for each kind of bad input."""

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

import torch

from parity_common import reference_models, safetensors_io

FAILURES = []


def check(condition, what):
    print(f"  {'ok  ' if condition else 'FAIL'} {what}")
    if not condition:
        FAILURES.append(what)


def run(args, expect_ok=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if expect_ok and r.returncode != 0:
        print(r.stdout, r.stderr)
    return r


def gpu_visible():
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin", required=True, help="folder holding psgd-train, psgd-eval, psgd-data")
    args = parser.parse_args()
    train, evaluate, data_tool = (os.path.join(args.bin, n) for n in ("psgd-train", "psgd-eval", "psgd-data"))
    tmp = tempfile.mkdtemp(prefix="psgd_cli_")
    try:
        data = os.path.join(tmp, "data")
        run([data_tool, "synth", "--out", data, "--train", "192", "--test", "64", "--seed", "3"])
        common = ["--data", data, "--arch", "resnet20", "--lr", "0.05", "--w_bit", "4", "--lambda_s", "50",
                  "--first_last_quant", "--decay_epoch", "2", "--batch_size", "64", "--threads", "2"]
        a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")

        print("training with the reference's option names:")
        r = run([train, *common, "--epoch", "2", "--out", a])
        check(r.returncode == 0, "psgd-train exits 0")
        check(all(os.path.exists(os.path.join(a, f)) for f in
                  ("config.json", "metrics.jsonl", "last.safetensors", "best_fp.safetensors", "best_lp.safetensors")),
              "config.json, metrics.jsonl and the three checkpoints exist")
        rows = [json.loads(line) for line in open(os.path.join(a, "metrics.jsonl"))]
        check([row["epoch"] for row in rows] == [1, 2], "one metrics row per epoch")
        check(abs(rows[1]["lr"] - 0.005) < 1e-9, "the decay epoch multiplies lr by gamma")
        config = json.load(open(os.path.join(a, "config.json")))
        check(config["w_bits"] == 4 and config["lambda_s"] == 50 and config["first_last_quant"],
              "config.json records every option")
        check("epoch 2/2" in r.stdout and "LP" in r.stdout, "an epoch line with FP and LP accuracy")
        check(config["data_fingerprint"].startswith("192 + 64 images, 10 classes, content "),
              "config.json records what names the images: their counts, classes and content hash")

        print("resume:")
        run([train, *common, "--epoch", "1", "--out", b])
        r = run([train, "--resume", b, "--epochs", "2"])
        check(r.returncode == 0 and "resuming" in r.stdout, "--resume continues the run")
        same = open(os.path.join(a, "last.safetensors"), "rb").read() == open(os.path.join(b, "last.safetensors"), "rb").read()
        check(same, "an interrupted run ends with exactly the uninterrupted run's checkpoint")
        other, moved = os.path.join(tmp, "other"), os.path.join(tmp, "moved")
        run([data_tool, "synth", "--out", other, "--train", "192", "--test", "64", "--seed", "4"])
        shutil.copytree(data, moved)
        r = run([train, "--resume", b, "--epochs", "3", "--data", moved])
        check(r.returncode == 0 and "resuming" in r.stdout and "epoch 3/3" in r.stdout,
              "--resume trains on the run's images from the folder they moved to")
        unrecorded = os.path.join(tmp, "unrecorded")
        shutil.copytree(b, unrecorded)
        config = json.load(open(os.path.join(unrecorded, "config.json")))
        del config["data_fingerprint"]
        json.dump(config, open(os.path.join(unrecorded, "config.json"), "w"))
        r = run([train, "--resume", unrecorded, "--epochs", "3", "--data", other])
        check(r.returncode == 0 and "nothing to train" in r.stdout,
              "a run recorded without the images' fingerprint resumes unchecked")

        r = run([train, *common, "--epoch", "1", "--holdout", "32", "--no-augment", "--no-shuffle",
                 "--drop-last", "--norm-mean", "0.5", "0.5", "0.5", "--out", os.path.join(tmp, "h")])
        check(r.returncode == 0 and "32 held-out images" in r.stdout,
              "--holdout evaluates on held-out training images; augmentation and shuffling switch off")

        print("the bf16 mode:")
        bf16 = os.path.join(tmp, "bf16")
        r = run([train, *common, "--epoch", "1", "--bf16", "--out", bf16])
        config = json.load(open(os.path.join(bf16, "config.json"))) if r.returncode == 0 else {}
        check(r.returncode == 0 and config.get("bf16") is True, "psgd-train --bf16 trains and records the mode")
        tensors, _ = safetensors_io.load(os.path.join(bf16, "last.safetensors"))
        check(tensors["layer1.0.conv1.weight"].dtype == "float32", "its checkpoint holds float32 weights")
        r = run([evaluate, "--model", os.path.join(bf16, "last.safetensors"), "--data", data, "--bf16"])
        check(r.returncode == 0 and "CPU, bf16" in r.stdout and "LP W4" in r.stdout,
              "psgd-eval --bf16 evaluates FP and LP in bf16")

        print("a linear warm-up ramps every step, so its first epoch trains:")
        conv = {}
        for epochs in ("1", "2"):
            warm = os.path.join(tmp, "warm" + epochs)
            r = run([train, *common, "--epoch", "1", "--warmup-epochs", epochs, "--out", warm])
            rows = [json.loads(line) for line in open(os.path.join(warm, "metrics.jsonl"))] if r.returncode == 0 else []
            check(len(rows) == 1 and abs(rows[0]["lr"] - 0.05 / int(epochs)) < 1e-7,
                  f"--warmup-epochs {epochs}: the first epoch ends at lr 0.05 / {epochs}")
            conv[epochs] = safetensors_io.load(os.path.join(warm, "last.safetensors"))[0]["layer1.0.conv1.weight"]
        check(not (conv["1"] == conv["2"]).all(), "ramps of one and two epochs train the first epoch apart")

        print("PyTorch reads our checkpoint:")
        tensors, meta = safetensors_io.load(os.path.join(a, "last.safetensors"))
        state = {k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("psgd.")}
        model = reference_models.build("resnet20", 10)
        model.load_state_dict(state, strict=True)
        check(meta["arch"] == "resnet20" and meta["epoch"] == "2", "metadata: arch and epoch")
        check(model(torch.zeros(1, 3, 32, 32)).shape == (1, 10), "load_state_dict(strict=True) and a forward")

        print("psgd-eval:")
        report = os.path.join(tmp, "report")
        r = run([evaluate, "--model", os.path.join(a, "last.safetensors"), "--data", data,
                 "--act_quant", "--a_bit", "4", "--act_clipping", "--sweep", "8", "4", "2",
                 "--sparsity", "0.3", "--report", report])
        check(r.returncode == 0 and "FP" in r.stdout and "LP W4A4" in r.stdout, "FP and LP accuracy")
        check("W2" in r.stdout and "pruned to 30.00%" in r.stdout, "sweep and pruning")
        check(os.path.exists(report + ".json") and os.path.exists(report + ".csv"), "report as JSON and CSV")

        exported = os.path.join(tmp, "int.safetensors")
        r = run([evaluate, "--model", os.path.join(a, "last.safetensors"), "--data", data,
                 "--find-clipping", "--holdout", "64", "--export", exported])
        check(r.returncode == 0 and "chosen n =" in r.stdout, "--find-clipping picks a range")
        ints, meta = safetensors_io.load(exported)
        conv = ints["layer1.0.conv1.weight"]
        check(conv.dtype.kind == "i" and conv.itemsize == 1 and abs(int(conv.min())) <= 7 and int(conv.max()) <= 7,
              "--export: I8 levels within the 4-bit range")
        w = tensors["layer1.0.conv1.weight"]
        scale = float(ints["layer1.0.conv1.weight.scale"])
        check(abs(scale - max(abs(min(0.0, float(w.min()))), max(0.0, float(w.max()))) / 7) < 1e-7,
              "--export: the scale is delta of the fresh range")
        check(float(abs(conv * scale - w).max()) <= scale / 2 + 1e-6, "--export: levels x scale is Q(w)")

        print("plots:")
        visualize = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "visualize.py")
        plots = os.path.join(tmp, "plots")
        r = run([sys.executable, visualize, "weights", os.path.join(a, "last.safetensors"),
                 os.path.join(b, "last.safetensors"), "--layers", "layer1.0.conv1.weight", "--out", plots])
        check(r.returncode == 0 and os.path.exists(os.path.join(plots, "layer1_0_conv1_weight.png")),
              "weight histograms side by side")
        r = run([sys.executable, visualize, "curves", a, b, "--out", os.path.join(plots, "curves.png")])
        check(r.returncode == 0 and os.path.exists(os.path.join(plots, "curves.png")), "training curves")

        print("bad input gives one clear line and a non-zero exit:")
        bad = [
            ([train, *common, "--w_bit", "1", "--out", os.path.join(tmp, "x")], "bits must be 2..8 or 32"),
            ([train, "--data", os.path.join(tmp, "nowhere")], "no such folder"),
            ([train, "--data", data, "--lr", "-1"], "--lr"),
            ([train, "--data", data, "--batch-size", "0"], "--batch-size"),
            ([train, "--data", data, "--optimizer", "adam"], "give --lambda-s > 0"),
            ([train, "--data", data, "--bf16", "--strict-fp32"], "--bf16 and --strict-fp32 exclude each other"),
            ([train, "--resume", data], "no config.json"),
            ([train, "--data", data, "--arch", "resnet32", "--init", os.path.join(a, "last.safetensors"),
              "--out", os.path.join(tmp, "y")], "checkpoint cannot start a resnet32"),
            ([evaluate, "--model", os.path.join(a, "config.json"), "--data", data], "not a valid safetensors file"),
            ([train, "--data", data, "--w-bits", "abc"], "bits must be 2..8 or 32, got 'abc'"),
            ([train, "--data", data, "--lr", "nan"], "--lr: must be a positive number, got 'nan'"),
            ([train, "--data", data, "--adam", "--optimizer", "sgd"], "--optimizer excludes --adam"),
            ([train, "--data", data, "--threads", "10000"], "--threads: must be 0 (every core) to 1024"),
            ([train, "--data", data, "--holdout", "32", "--test-subset", "8"], "give one of them"),
            ([train, "--data", data, "--train-subset", "100000"], "--train-subset 100000: the training set holds only"),
            ([train, "--data", data, "--test-subset", "100000"], "--test-subset 100000: the test set holds only"),
            ([train, "--data", data, "--holdout", "32", "--train-subset", "100000"],
             "the training set less --holdout holds only"),
            ([train, *common, "--epoch", "1", "--out", a], "holds a run (last.safetensors)"),
            ([train, "--resume", a, "--arch", "resnet32"], "--arch cannot change"),
            ([train, "--resume", a, "--overwrite"], "give one of them"),
            ([train, "--resume", a, "--epochs", "3", "--data", other],
             "holds other images than the run trained on"),
            ([train, "--data", data, "--norm-std", "inf", "1", "1"], "--norm-std values must be finite"),
            ([evaluate, "--model", os.path.join(a, "last.safetensors"), "--data", data, "--act-clipping"],
             "--act-clipping clips quantized activations"),
            ([evaluate, "--model", os.path.join(a, "last.safetensors"), "--data", data, "--a-bits", "4"],
             "--a-bits requires --act-quant"),
            ([train, *common, "--init", a, "--out", os.path.join(tmp, "z")], "a folder, not a checkpoint file"),
        ]
        if not gpu_visible():
            bad += [([train, "--data", data, "--device", "cuda"], "--device cuda: no GPU is visible"),
                    ([evaluate, "--model", os.path.join(a, "last.safetensors"), "--data", data, "--device", "cuda"],
                     "--device cuda: no GPU is visible")]
        for command, message in bad:
            r = run(command, expect_ok=False)
            text = (r.stdout + r.stderr).strip()
            check(r.returncode != 0 and message in text and len(r.stderr.strip().splitlines()) == 1,
                  f"{' '.join(command[1:3])}...: '{message}'")

        print("a run with weights gone non-finite writes no checkpoint of them:")
        diverged = os.path.join(tmp, "diverged")
        r = run([train, "--data", data, "--arch", "resnet20", "--batch-size", "64", "--threads", "2", "--epochs", "1",
                 "--lr", "1e10", "--out", diverged], expect_ok=False)  # its evaluation loss stays finite
        check(r.returncode != 0 and "not a finite float32" in r.stderr and len(r.stderr.strip().splitlines()) == 1,
              "finite loss, NaN weights: one line and a non-zero exit")
        check(not os.path.exists(os.path.join(diverged, "last.safetensors")), "no checkpoint written")

        print("a new run replaces a finished one only when told:")
        before = open(os.path.join(b, "last.safetensors"), "rb").read()
        r = run([train, *common, "--epoch", "1", "--seed", "5", "--out", b, "--overwrite"])
        rows = [json.loads(line)["epoch"] for line in open(os.path.join(b, "metrics.jsonl"))]
        check(r.returncode == 0 and open(os.path.join(b, "last.safetensors"), "rb").read() != before and rows == [1],
              "--overwrite starts anew in the folder, the old run's rows gone")
        r = run([train, "--resume", b, "--epochs", "1", "--arch", "resnet20"])
        check(r.returncode == 0 and "nothing to train" in r.stdout,
              "a finished run says there is nothing to train (an option given again unchanged is accepted)")

        print("a diverging run stops and keeps the last good checkpoint:")
        before = open(os.path.join(b, "last.safetensors"), "rb").read()
        config = json.load(open(os.path.join(b, "config.json")))
        config["lr"] = 1e30
        json.dump(config, open(os.path.join(b, "config.json"), "w"))
        r = run([train, "--resume", b, "--epochs", "3"], expect_ok=False)
        check(r.returncode != 0 and "the loss is" in r.stderr, "a NaN loss stops training with a message")
        check(open(os.path.join(b, "last.safetensors"), "rb").read() == before, "last.safetensors untouched")

        print("a full disk stops training with one line and keeps the last good checkpoint:")
        before = open(os.path.join(a, "last.safetensors"), "rb").read()

        def small_files():  # files may not grow past half a checkpoint
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, len(before) // 2))

        r = subprocess.run([train, "--resume", a, "--epochs", "3"], capture_output=True, text=True,
                           preexec_fn=small_files)
        check(r.returncode != 0 and "left unchanged" in r.stderr and len(r.stderr.strip().splitlines()) <= 2,
              "the failed checkpoint write stops the run with one line")
        check(open(os.path.join(a, "last.safetensors"), "rb").read() == before, "last.safetensors untouched")
        r = run([train, "--resume", a, "--epochs", "3"])
        rows = [json.loads(line) for line in open(os.path.join(a, "metrics.jsonl"))]
        check(r.returncode == 0 and [row["epoch"] for row in rows] == [1, 2, 3],
              "resumed after it: epoch 3 again, with one metrics row per epoch")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'cli: PASSED' if not FAILURES else f'cli: FAILED ({len(FAILURES)})'}")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
