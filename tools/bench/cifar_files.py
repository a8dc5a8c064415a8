"""A psgd dataset folder read into tensors, as data/dataset.cpp reads it, for the PyTorch side of the
benchmarks: a psgd-data folder (dataset.json names the format, classes, files and normalisation) or
CIFAR's own binary files (CIFAR-100's train.bin and test.bin, CIFAR-10's data_batch_1..5.bin and
test_batch.bin, in the folder or in cifar-100-binary/ or cifar-10-batches-bin/ under it)."""

import json
import os

import torch

IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = {"cifar10": 1 + IMAGE_BYTES, "cifar100": 2 + IMAGE_BYTES}  # label(s), then the pixels
CLASSES = {"cifar10": 10, "cifar100": 100}
# The reference's normalisation (REFERENCE.md), where a folder names none.
REFERENCE_MEAN = (129.3 / 255, 124.1 / 255, 112.4 / 255)
REFERENCE_STD = (68.2 / 255, 65.4 / 255, 70.4 / 255)


class Split:
    """images: (N, 3, 32, 32) uint8; labels: (N,) int64 (CIFAR-100's fine labels)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels


def standard_layout(folder):
    """(format, train files, test files) of the first complete standard layout, as psgd looks."""
    for fmt, sub in (("cifar100", "cifar-100-binary"), ("cifar10", "cifar-10-batches-bin")):
        for base in (os.path.join(folder, sub), folder):
            if fmt == "cifar100":
                train, test = [os.path.join(base, "train.bin")], [os.path.join(base, "test.bin")]
            else:
                train = [os.path.join(base, f"data_batch_{i}.bin") for i in range(1, 6)]
                test = [os.path.join(base, "test_batch.bin")]
            if all(os.path.isfile(f) for f in train + test):
                return fmt, train, test
    raise SystemExit(f"cifar_files: {folder}: no dataset.json and no CIFAR-10 or CIFAR-100 binary files")


def read_records(files, fmt, classes):
    record = RECORD_BYTES[fmt]
    data = bytearray()
    for path in files:
        with open(path, "rb") as f:
            data += f.read()
    if len(data) % record:
        raise SystemExit(f"cifar_files: {', '.join(files)}: {len(data)} bytes is not a whole number of "
                         f"{record}-byte {fmt} records")
    rows = torch.frombuffer(data, dtype=torch.uint8).view(-1, record)
    labels = rows[:, record - IMAGE_BYTES - 1].long()  # CIFAR-100: the fine label, after the coarse
    if len(labels) and int(labels.max()) >= classes:
        raise SystemExit(f"cifar_files: {', '.join(files)}: label {int(labels.max())} outside 0..{classes - 1}")
    return Split(rows[:, record - IMAGE_BYTES:].reshape(-1, 3, 32, 32).clone(), labels)


def load(folder):
    """(train Split, test Split, classes, mean, std) of a dataset folder."""
    manifest = os.path.join(folder, "dataset.json")
    mean, std = REFERENCE_MEAN, REFERENCE_STD
    if os.path.isfile(manifest):
        with open(manifest) as f:
            m = json.load(f)
        fmt, classes = m["format"], int(m["classes"])
        train = [os.path.join(folder, name) for name in m["train"]]
        test = [os.path.join(folder, name) for name in m["test"]]
        mean, std = tuple(m.get("mean", mean)), tuple(m.get("std", std))
    else:
        fmt, train, test = standard_layout(folder)
        classes = CLASSES[fmt]
    if fmt not in RECORD_BYTES:
        raise SystemExit(f"cifar_files: {manifest}: unknown format {fmt!r}")
    return read_records(train, fmt, classes), read_records(test, fmt, classes), classes, mean, std
