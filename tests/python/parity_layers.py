#!/usr/bin/python3
"""Every layer against torch.nn.functional in float64, on awkward shapes: odd sizes, stride 2
and 3, 1x1, 2x2 and 5x5 kernels, batch 1, overlapping and partial pooling windows, flattened
linear inputs. psgd-layer-dump runs each layer forward (training mode) and backward; this
script recomputes the output, the input gradients, the parameter gradients and BN's running
statistics with PyTorch and compares them."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from parity_common import rel_error, rng, safetensors_io


def forward(spec, x, params, seed):
    kind = spec["kind"]
    if kind == "conv2d":
        return F.conv2d(x[0], params["conv.weight"], stride=spec["stride"], padding=spec["pad"])
    if kind == "batch_norm":
        return F.batch_norm(x[0], params["bn.running_mean"], params["bn.running_var"],
                            params["bn.weight"], params["bn.bias"], training=True,
                            momentum=0.1, eps=1e-5)
    if kind == "relu":
        return F.relu(x[0])
    if kind == "add":
        return x[0] + x[1]
    if kind == "avg_pool":
        return F.avg_pool2d(x[0], spec["kernel"], spec["stride"])
    if kind == "max_pool":
        return F.max_pool2d(x[0], spec["kernel"], spec["stride"])
    if kind == "linear":
        return F.linear(x[0].flatten(1), params["fc.weight"], params["fc.bias"])
    if kind == "dropout":
        keep = rng.uniform(rng.stream_key(seed, spec["stream"]), x[0].numel()) >= spec["p"]
        mask = torch.from_numpy(keep.reshape(tuple(x[0].shape))).double()
        return x[0] * mask / (1 - spec["p"])
    raise ValueError(f"unknown layer kind {kind}")


def check_case(index, spec, tensors, seed, tolerance):
    prefix = f"case{index}."
    get = lambda name: torch.from_numpy(tensors[prefix + name]).double()  # noqa: E731
    x = [get(f"x{k}").requires_grad_() for k in range(2) if prefix + f"x{k}" in tensors]
    params = {}
    for key in tensors:
        if key.startswith(prefix + "param."):
            name = key[len(prefix + "param."):]
            params[name] = get("param." + name)
            if not name.endswith(("running_mean", "running_var")):
                params[name].requires_grad_()
    y = forward(spec, x, params, seed)
    y.backward(get("dy"))
    errors = {"y": rel_error(tensors[prefix + "y"], y.detach().numpy())}
    for k, xk in enumerate(x):
        errors[f"dx{k}"] = rel_error(tensors[prefix + f"dx{k}"], xk.grad.numpy())
    for name, p in params.items():
        if p.requires_grad:
            errors[f"grad {name}"] = rel_error(tensors[prefix + "grad." + name], p.grad.numpy())
        else:  # F.batch_norm updated the running statistics in place
            errors[f"state {name}"] = rel_error(tensors[prefix + "state." + name], p.numpy())
    worst = max(errors, key=errors.get)
    ok = errors[worst] <= tolerance
    print(f"  {'ok ' if ok else 'FAIL'} {spec['describe']:<42} input "
          f"{'x'.join(str(d) for d in x[0].shape):<10} worst {worst} {errors[worst]:.1e}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dump", required=True, help="path to psgd-layer-dump")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layers.safetensors")
        subprocess.run([args.dump, path], check=True, stdout=subprocess.DEVNULL)
        tensors, meta = safetensors_io.load(path)
    cases = json.loads(meta["cases"])
    print(f"{len(cases)} layer cases against torch.nn.functional (float64), relative error "
          f"limit {args.tolerance:.0e}:")
    ok = all([check_case(i, spec, tensors, int(meta["seed"]), args.tolerance)
              for i, spec in enumerate(cases)])
    print("layer parity: PASSED" if ok else "layer parity: FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
