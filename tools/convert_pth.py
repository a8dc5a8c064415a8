#!/usr/bin/python3
"""Converts a PyTorch checkpoint into a psgd safetensors file.

Accepts a bare state_dict or a dict holding one under "state_dict" (the reference's format:
{"epoch", "state_dict", "best_acc", "optimizer"}); a "module." prefix left by DataParallel is
removed. Float tensors are stored as F32, integer ones (num_batches_tracked) as I64, under their
state_dict names; the checkpoint's epoch and best accuracy, when present, go into the metadata.

Usage: tools/convert_pth.py ResNet150.pth resnet32_sgd150.safetensors [--arch resnet32]
Runs under Debian's /usr/bin/python3 with python3-torch.
"""

import argparse
import contextlib
import os
import pickle
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def fail(message):
    print(f"convert_pth: {message}", file=sys.stderr)
    sys.exit(1)


# A checkpoint is data, never a program: unpickling may only build these.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "Size"),
} | {("torch", f"{kind}Storage") for kind in
     ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")}


_PlainUnpickler = pickle.Unpickler


class _RestrictedUnpickler(_PlainUnpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


@contextlib.contextmanager
def _restricted_unpickling():
    """torch.load subclasses pickle.Unpickler at call time; PyTorch 1.13 ignores a pickle_module
    argument and its weights_only loader cannot read the reference's legacy-format files, so the
    restriction is installed in the pickle module for the duration of the load."""
    saved = pickle.Unpickler, pickle.load
    pickle.Unpickler = _RestrictedUnpickler
    pickle.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
    try:
        yield
    finally:
        pickle.Unpickler, pickle.load = saved


def load_state_dict(path):
    import torch
    try:
        with _restricted_unpickling():
            checkpoint = torch.load(path, map_location="cpu")
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        fail(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
             f"{str(e).splitlines()[0] if str(e) else 'no detail'})")
    extra = {}
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        for key in ("epoch", "best_acc"):
            if key in checkpoint and np.isscalar(_plain(checkpoint[key])):
                extra[key] = str(_plain(checkpoint[key]))
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        fail(f"{path}: holds no state_dict")
    tensors = {}
    for name, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            fail(f"{path}: entry '{name}' is a {type(value).__name__}, not a tensor")
        name = name[len("module."):] if name.startswith("module.") else name
        array = value.detach().cpu().numpy()
        tensors[name] = array.astype(np.float32 if array.dtype.kind == "f" else np.int64)
    return tensors, extra


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="PyTorch .pth/.pt file")
    parser.add_argument("output", help="safetensors file to write")
    parser.add_argument("--arch", help="record the architecture in the metadata (e.g. resnet32)")
    args = parser.parse_args()
    tensors, metadata = load_state_dict(args.checkpoint)
    metadata["source"] = os.path.basename(args.checkpoint)
    if args.arch:
        metadata["arch"] = args.arch
    try:
        safetensors_io.save(args.output, tensors, metadata)
    except OSError as e:
        fail(f"cannot write {args.output}: {e.strerror}")
    params = sum(int(t.size) for n, t in tensors.items() if t.dtype == np.float32)
    print(f"convert_pth: {len(tensors)} tensors ({params} float values) -> {args.output}")


if __name__ == "__main__":
    main()
