#!/usr/bin/python3
"""PSGD parity with PyTorch. From the same weights and the same batches, our engine and a
PyTorch implementation of ../shared/REFERENCE.md written for this test take three PSGD steps
(w_bits 4, lambda_s 150, lr 0.01, momentum 0.9, weight decay 1e-4, first/last layers
quantized); the weights must agree. Then, from our final weights, the low-precision (LP)
logits must agree for W4 (float activations) and W4A4 (activations clipped at
max(beta + 6 gamma) of the preceding BN).

PyTorch runs in float64 and follows our ReLU decisions and activation levels where an input is
within rounding of a branch or rounding boundary; each such override must be a tie."""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from parity_common import ReluPins, rel_error, reference_models, safetensors_io

W_BITS, A_BITS, LAMBDA_S, LR, MOMENTUM, WEIGHT_DECAY, CLIP_N = 4, 4, 150.0, 0.01, 0.9, 1e-4, 6.0


def quantized_names(model):
    """REFERENCE.md: every conv weight, and with first/last quantization the first conv and the
    last linear layer's weight and bias (at w_bits, as w_bits >= 4)."""
    names = [n for n, p in model.named_parameters() if p.dim() == 4]
    return names + ["fc.weight", "fc.bias"]


def quantize(w, delta, levels):
    return delta * torch.round(torch.clamp(w / delta, -levels, levels))


def psgd_steps(arch, weights, dump, steps):
    model = reference_models.build(arch, 100)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    model = model.double().train()
    params = dict(model.named_parameters())
    quantized = quantized_names(model)
    levels = 2 ** (W_BITS - 1) - 1
    x_min, x_max = {}, {}
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                          weight_decay=WEIGHT_DECAY)
    ties = 0
    for step in range(steps):
        prefix = f"step{step}."
        pins = ReluPins(model, {k[len(prefix):]: v for k, v in dump.items()
                                if k.startswith(prefix + "relu_open.")})
        images = torch.from_numpy(dump[prefix + "images"]).double()
        labels = torch.from_numpy(dump[prefix + "labels"].astype(np.int64))
        opt.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        pins.remove()
        ties += pins.overridden
        assert pins.worst_tie <= 1e-4, f"step {step}: a ReLU decision differs beyond rounding"
        with torch.no_grad():
            for name in quantized:
                w = params[name]
                lo, hi = min(0.0, float(w.min())), max(0.0, float(w.max()))
                x_min[name] = lo if step == 0 else 0.1 * lo + 0.9 * x_min[name]
                x_max[name] = hi if step == 0 else 0.1 * hi + 0.9 * x_max[name]
                delta = max(abs(x_min[name]), x_max[name]) / levels
                w.grad *= LAMBDA_S * (w - quantize(w, delta, levels)).abs()
        opt.step()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return state, ties


class ActivationPins:
    """Quantizing ReLUs with the clipped range, following our levels where ours and PyTorch's
    differ; each difference must sit on a rounding boundary."""

    def __init__(self, model, state, dump):
        self.hooks, self.overridden, self.worst = [], 0, 0.0
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.ReLU):
                continue
            bn = (name.rsplit(".", 1)[0] + "." if "." in name else "") + (
                "bn1" if name.endswith(("relu", "relu1")) else "bn2")
            gamma = torch.from_numpy(state[bn + ".weight"])  # float32, as the reference
            beta = torch.from_numpy(state[bn + ".bias"])
            delta = float((beta + CLIP_N * gamma).max()) / float(2 ** A_BITS - 1)
            delta = float(np.float32(delta))
            ours = torch.from_numpy(dump["lpa.level." + name].astype(np.float64))
            self.hooks.append(module.register_forward_hook(self._hook(delta, ours)))

    def _hook(self, delta, ours):
        def pin(module, inputs, output):
            scaled = inputs[0] / delta
            theirs = torch.round(torch.clamp(scaled, 0, 2 ** A_BITS - 1))
            differ = theirs != ours
            self.overridden += int(differ.sum())
            if differ.any():  # distance from the rounding boundary k + 0.5
                off = (scaled[differ] - torch.floor(scaled[differ]) - 0.5).abs().max()
                self.worst = max(self.worst, float(off))
            return ours * delta
        return pin


def lp_logits(arch, final, dump, activations):
    """Our final weights quantized exactly as REFERENCE.md (ranges fresh, float32 arithmetic),
    then a float64 evaluation."""
    model = reference_models.build(arch, 100)
    state = {}
    levels = 2 ** (W_BITS - 1) - 1
    for name, value in final.items():
        t = torch.from_numpy(value)
        if name in quantized_names(model):
            lo, hi = torch.clamp(t.min(), max=0), torch.clamp(t.max(), min=0)
            t = quantize(t, torch.maximum(lo.abs(), hi) / levels, levels)
        state[name] = t
    model.load_state_dict(state, strict=True)
    model = model.double().eval()
    images = torch.from_numpy(dump["eval.images"]).double()
    if activations:
        pins = ActivationPins(model, final, dump)
    else:
        pins = ReluPins(model, {k[len("lp."):]: v for k, v in dump.items()
                                if k.startswith("lp.relu_open.")})
    with torch.no_grad():
        logits = model(images).numpy()
    return logits, pins


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dump", required=True, help="path to psgd-psgd-dump")
    parser.add_argument("--arch", default="resnet32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start, out = os.path.join(tmp, "start.safetensors"), os.path.join(tmp, "psgd.safetensors")
        subprocess.run([args.dump, "--arch", args.arch, "--steps", str(args.steps),
                        "--w-bits", str(W_BITS), "--a-bits", str(A_BITS), "--lambda-s",
                        str(LAMBDA_S), "--lr", str(LR), "--weights-out", start, "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        weights, _ = safetensors_io.load(start)
        dump, _ = safetensors_io.load(out)
        final, _ = safetensors_io.load(out + ".final")

    reference, ties = psgd_steps(args.arch, weights, dump, args.steps)
    errors = {n: rel_error(final[n], reference[n]) for n in reference
              if not n.endswith("num_batches_tracked")}
    counts_ok = all(int(final[n]) == int(reference[n]) for n in reference
                    if n.endswith("num_batches_tracked"))
    worst = max(errors, key=errors.get)
    quantized = quantized_names(reference_models.build(args.arch, 100))
    print(f"{args.arch}: {args.steps} PSGD steps (W{W_BITS}, lambda_s {LAMBDA_S:g}, lr {LR:g}, "
          f"momentum {MOMENTUM:g}, weight decay {WEIGHT_DECAY:g}, first/last quantized), "
          f"ours vs PyTorch float64:")
    print(f"  weights: worst {worst} {errors[worst]:.2e}, median "
          f"{np.median(list(errors.values())):.2e}, quantized tensors worst "
          f"{max(errors[n] for n in quantized):.2e}; ReLU ties followed: {ties}")

    lp, lp_pins = lp_logits(args.arch, final, dump, activations=False)
    lpa, act_pins = lp_logits(args.arch, final, dump, activations=True)
    lp_err = rel_error(dump["lp.logits"], lp)
    lpa_err = rel_error(dump["lpa.logits"], lpa)
    print(f"  LP logits W{W_BITS}: {lp_err:.2e} (ReLU ties {lp_pins.overridden}); "
          f"W{W_BITS}A{A_BITS} clipped at beta + {CLIP_N:g} gamma: {lpa_err:.2e} "
          f"(activation levels on a rounding boundary {act_pins.overridden}, farthest "
          f"{act_pins.worst:.1e} from it)")
    ok = (errors[worst] <= args.tolerance and counts_ok and lp_err <= args.tolerance and
          lpa_err <= args.tolerance and lp_pins.worst_tie <= 1e-4 and act_pins.worst <= 1e-3)
    print("psgd parity: PASSED" if ok else "psgd parity: FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
