"""The reference for the bf16 network test (tests/unit/test_nets.cpp): PyTorch's ResNet-20 with psgd's bf16
roundings (every conv, BN, ReLU and linear output and the gradient flowing into each, the conv and linear
weights, and the conv weights' gradients, rounded to bfloat16) against plain float32, at initialisation on
random images. It prints the relative errors of the logits and
of the whole parameter gradient, and fails if they leave the bounds the C++ test allows (logits 0.02,
gradient 0.45): those bounds are then no longer what PyTorch itself shows."""

import argparse
import copy
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import reference_models  # noqa: E402


class RoundToBf16(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.bfloat16().float()

    @staticmethod
    def backward(ctx, grad):
        return grad.bfloat16().float()


def with_bf16_weights(model):
    """A copy whose conv and linear weights hold their bf16 roundings (what cuDNN and cuBLAS multiply), and
    whose conv weight gradients come back rounded (as cuDNN returns them)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data = m.weight.data.bfloat16().float()
        if isinstance(m, nn.Conv2d):
            m.weight.register_hook(lambda grad: grad.bfloat16().float())
    return model


def logits_and_gradient(model, images, labels, bf16):
    hooks = []
    if bf16:
        model = with_bf16_weights(model)
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear)):
                hooks.append(m.register_forward_hook(lambda mod, inputs, out: RoundToBf16.apply(out)))
        images = RoundToBf16.apply(images)
    model.zero_grad()
    logits = model(images)
    nn.functional.cross_entropy(logits, labels).backward()
    for h in hooks:
        h.remove()
    return logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    worst_logits = worst_gradient = 0.0
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = reference_models.CifarResNet(20, 10)
        images = torch.rand(16, 3, 32, 32) * 4 - 2
        labels = torch.tensor([(3 * i) % 10 for i in range(16)])
        z32, g32 = logits_and_gradient(model, images, labels, bf16=False)
        z16, g16 = logits_and_gradient(model, images, labels, bf16=True)
        logits, gradient = relative(z16, z32), relative(g16, g32)
        print(f"seed {seed}: logits {logits:.4f}, gradient {gradient:.4f}")
        worst_logits, worst_gradient = max(worst_logits, logits), max(worst_gradient, gradient)
    if worst_logits >= 0.02 or worst_gradient >= 0.45:
        sys.exit(f"PyTorch's bf16 spread (logits {worst_logits:.4f}, gradient {worst_gradient:.4f}) "
                 "leaves the bounds of tests/unit/test_nets.cpp")


if __name__ == "__main__":
    main()
