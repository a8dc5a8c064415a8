#!/usr/bin/python3
"""Whole-network parity with PyTorch: our engine and an independent PyTorch implementation of
REFERENCE.md run the same training step from the same weights and the same batch; the logits,
the loss, every parameter gradient and the BN state after the step must agree.

The PyTorch side runs in float64, so the errors printed are ours (float32) against an exact
reference; PyTorch's own float32 error is printed beside them for scale.

A ReLU input within rounding of zero can take the other branch in another precision and move
a gradient by far more than rounding; the PyTorch side therefore follows our ReLU decisions,
and the check requires every decision it overrides to be such a rounding-level tie."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from parity_common import ReluPins, rel_error, reference_models, rng, safetensors_io


def reference_step(arch, classes, weights, dump, dtype):
    model = reference_models.build(arch, classes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    model = model.to(dtype).train()
    pins = ReluPins(model, dump[0])
    meta = dump[1]
    drops = [m for m in model.modules() if isinstance(m, reference_models.MaskedDropout)]
    streams = json.loads(meta["dropout"])
    assert len(drops) == len(streams), "dropout layers and streams differ"
    images = torch.from_numpy(dump[0]["images"]).to(dtype)
    labels = torch.from_numpy(dump[0]["labels"].astype(np.int64))
    # Masks depend on the activation shape, known only during the forward: set them by hook.
    for layer, info in zip(drops, streams):
        def set_mask(module, inputs, info=info):
            module.keep = rng.dropout_keep_mask(int(meta["seed"]), info["stream"],
                                                info["forward_index"], inputs[0].shape, module.p)
        layer.register_forward_pre_hook(set_mask)
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = {n: p.grad.detach().numpy() for n, p in model.named_parameters()}
    state = {n: b.detach().numpy() for n, b in model.named_buffers()}
    return logits.detach().numpy(), float(loss), grads, state, pins


def check(arch, classes, batch, dump_bin, workdir, tolerance):
    weights_path = os.path.join(workdir, f"{arch}_weights.safetensors")
    dump_path = os.path.join(workdir, f"{arch}_step.safetensors")
    subprocess.run([dump_bin, "--arch", arch, "--classes", str(classes), "--batch", str(batch),
                    "--seed", "3", "--weights-out", weights_path, "--out", dump_path],
                   check=True, stdout=subprocess.DEVNULL)
    weights, _ = safetensors_io.load(weights_path)
    dump = safetensors_io.load(dump_path)
    ours = dump[0]
    ref = reference_step(arch, classes, weights, dump, torch.float64)
    ref32 = reference_step(arch, classes, weights, dump, torch.float32)

    rows = [("logits", rel_error(ours["logits"], ref[0]), rel_error(ref32[0], ref[0])),
            ("loss", rel_error(ours["loss"], ref[1]), rel_error(ref32[1], ref[1]))]
    for name, g in ref[2].items():
        rows.append((f"grad {name}", rel_error(ours["grad." + name], g),
                     rel_error(ref32[2][name], g)))
    for name, b in ref[3].items():
        rows.append((f"state {name}", rel_error(ours["state." + name], b),
                     rel_error(ref32[3][name], b)))

    worst = max(rows, key=lambda r: r[1])
    grads = [r for r in rows if r[0].startswith("grad")]
    print(f"{arch} (batch {batch}, {classes} classes, {len(grads)} parameter gradients): "
          f"ours vs PyTorch float64, relative error (PyTorch float32 for scale)")
    for label in ("logits", "loss"):
        row = next(r for r in rows if r[0] == label)
        print(f"  {label:<8} {row[1]:.2e}  ({row[2]:.2e})")
    print(f"  grads    worst {max(r[1] for r in grads):.2e}, median "
          f"{np.median([r[1] for r in grads]):.2e}  "
          f"(worst {max(r[2] for r in grads):.2e})")
    print(f"  worst of all: {worst[0]} {worst[1]:.2e}")
    pins = ref[4]
    print(f"  ReLU decisions: {pins.overridden} of {pins.total} were rounding-level ties "
          f"(largest |x| / max |x| = {pins.worst_tie:.1e})")
    if pins.overridden > pins.total * 1e-5 or pins.worst_tie > 1e-4:
        rows.append(("ReLU decisions beyond rounding", float("inf"), 0.0))
    failed = [r for r in rows if not r[1] <= tolerance]
    for name, err, _ in failed:
        print(f"  FAIL {name}: {err:.2e} > {tolerance:.0e}")
    return not failed


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dump", required=True, help="path to psgd-parity-dump")
    parser.add_argument("--arch", nargs="+", default=["resnet32", "vgg16_bn"])
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    torch.manual_seed(0)
    batches = {"vgg16_bn": 8}
    ok = True
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.arch:
            ok &= check(arch, 100, batches.get(arch, 16), args.dump, workdir, args.tolerance)
    print("parity: PASSED" if ok else "parity: FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
