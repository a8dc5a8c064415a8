"""Reads and writes safetensors files with numpy alone (no torch, no safetensors package).

The format: an 8-byte little-endian header length, a JSON header mapping each name to
{dtype, shape, data_offsets} plus an optional "__metadata__" map of strings, then raw
little-endian data. psgd's C++ engine reads and writes the same files.
"""

import json
import os
import struct

import numpy as np

_DTYPES = {
    "F32": np.float32,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "U8": np.uint8,
    "I8": np.int8,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def save(path, tensors, metadata=None):
    """Writes {name: numpy array} (in insertion order) atomically."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, array in tensors.items():
        array = np.asarray(array)  # (ascontiguousarray would turn a scalar into shape [1])
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
        dtype = _NAMES.get(array.dtype)
        if dtype is None:
            raise ValueError(f"{name}: unsupported dtype {array.dtype}")
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path):
    """Returns ({name: numpy array}, metadata) in file order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError(f"{path}: header length {length} exceeds the file")
    header = json.loads(data[8:8 + length])
    body = memoryview(data)[8 + length:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, spec in header.items():
        begin, end = spec["data_offsets"]
        dtype = np.dtype(_DTYPES[spec["dtype"]]).newbyteorder("<")
        tensors[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(spec["shape"]).copy()
    return tensors, metadata
