#!/usr/bin/python3
"""The authors' checkpoint through our engine: tools/convert_pth.py turns ResNet150.pth (the
reference's SGD-trained ResNet-32 for CIFAR-100) into safetensors, our engine loads it strictly
and runs an evaluation forward on real images (Fashion-MNIST, padded to 32x32 RGB and
normalised as the reference's test transform), and PyTorch runs the .pth itself on the same
batch. The logits must agree."""

import argparse
import gzip
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

from parity_common import HERE, ReluPins, rel_error, reference_models, safetensors_io

SKIP = 77  # ctest's SKIP_RETURN_CODE
MEAN = (np.array([129.3, 124.1, 112.4]) / 255).astype(np.float32)  # the reference divides doubles
STD = (np.array([68.2, 65.4, 70.4]) / 255).astype(np.float32)


def fashion_mnist_batch(directory, count):
    """The first `count` test images as CIFAR-shaped, normalised float32 (N, 3, 32, 32)."""
    with gzip.open(os.path.join(directory, "t10k-images-idx3-ubyte.gz")) as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    with gzip.open(os.path.join(directory, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:count].astype(np.int32)
    padded = np.pad(pixels, ((0, 0), (2, 2), (2, 2))).astype(np.float32) / 255
    rgb = np.repeat(padded[:, None], 3, axis=1)
    return (rgb - MEAN[None, :, None, None]) / STD[None, :, None, None], labels


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dump", required=True, help="path to psgd-parity-dump")
    parser.add_argument("--checkpoint", required=True, help="ResNet150.pth")
    parser.add_argument("--images", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    if not os.path.exists(args.checkpoint):
        print(f"SKIP: {args.checkpoint} not present")
        sys.exit(SKIP)
    if not os.path.isdir(args.images):
        sys.exit(f"no images at {args.images}: install dataset-fashion-mnist")

    with tempfile.TemporaryDirectory() as tmp:
        converted = os.path.join(tmp, "resnet150.safetensors")
        inputs = os.path.join(tmp, "inputs.safetensors")
        dump_path = os.path.join(tmp, "dump.safetensors")
        subprocess.run([sys.executable, os.path.join(HERE, "..", "..", "tools", "convert_pth.py"),
                        args.checkpoint, converted, "--arch", "resnet32"], check=True)
        images, labels = fashion_mnist_batch(args.images, args.count)
        safetensors_io.save(inputs, {"images": images, "labels": labels})
        subprocess.run([args.dump, "--arch", "resnet32", "--classes", "100", "--mode", "eval",
                        "--weights-in", converted, "--inputs", inputs, "--out", dump_path],
                       check=True, stdout=subprocess.DEVNULL)
        ours, _ = safetensors_io.load(dump_path)
        meta = safetensors_io.load(converted)[1]

    checkpoint = torch.load(args.checkpoint, map_location="cpu")  # our own test file
    model = reference_models.build("resnet32", 100)
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    model = model.double().eval()
    pins = ReluPins(model, ours)
    with torch.no_grad():
        ref = model(torch.from_numpy(images).double()).numpy()

    err = rel_error(ours["logits"], ref)
    agree = float(np.mean(ours["logits"].argmax(1) == ref.argmax(1)))
    print(f"ResNet150.pth (epoch {meta.get('epoch')}, best_acc {meta.get('best_acc')}) on "
          f"{args.count} Fashion-MNIST images: logits relative error {err:.2e}, "
          f"top-1 agreement {agree:.1%}, ReLU ties {pins.overridden} of {pins.total}")
    ok = err <= args.tolerance and agree == 1.0 and pins.worst_tie <= 1e-4
    print("checkpoint parity: PASSED" if ok else "checkpoint parity: FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
