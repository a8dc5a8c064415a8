"""Shared by the parity checks: paths to our Python modules, the error measure, and the ReLU
pinning that keeps rounding-level ties from masquerading as bugs."""

import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
sys.path.insert(0, HERE)
import reference_models  # noqa: E402,F401  (tools/)
import rng  # noqa: E402,F401
import safetensors_io  # noqa: E402,F401


def rel_error(ours, ref):
    """max |ours - ref| / max |ref|: the error relative to the tensor's scale."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    scale = np.abs(ref).max()
    return float(np.abs(ours - ref).max() / scale) if scale > 0 else float(np.abs(ours).max())


class ReluPins:
    """Makes each named nn.ReLU follow psgd's decisions and records where they differ."""

    def __init__(self, model, dump):
        self.overridden = 0
        self.total = 0
        self.worst_tie = 0.0  # largest |input| / max |input| among overridden decisions
        self.hooks = []
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.ReLU):
                open_mask = torch.from_numpy(dump["relu_open." + name].astype(bool))
                self.hooks.append(module.register_forward_hook(self._hook(open_mask)))

    def remove(self):
        for hook in self.hooks:
            hook.remove()

    def _hook(self, open_mask):
        def pin(module, inputs, output):
            x = inputs[0]
            differ = (x > 0) != open_mask
            self.total += x.numel()
            self.overridden += int(differ.sum())
            if differ.any():
                tie = float(x.detach().abs()[differ].max() / x.detach().abs().max())
                self.worst_tie = max(self.worst_tie, tie)
            return x * open_mask.to(x.dtype)
        return pin
