"""numpy twin of kernels/rng.h: the counter-based generator behind dropout masks and init."""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(z):
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed, stream):
    with np.errstate(over="ignore"):
        return mix64(np.uint64(seed) + _GOLDEN * (np.uint64(stream) + np.uint64(1)))


def uniform(key, count):
    """Elements 0..count-1 of the stream: float32 in [0, 1) with 24 random bits."""
    index = np.arange(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = mix64(np.uint64(key) + _GOLDEN * (index + np.uint64(1)))
    return (bits >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def dropout_keep_mask(seed, layer_stream, forward_index, shape, p):
    """The mask psgd's Dropout layer draws at its forward number `forward_index`."""
    key = stream_key(seed, (layer_stream << 32) | (forward_index & 0xFFFFFFFF))
    return (uniform(key, int(np.prod(shape))) >= np.float32(p)).reshape(shape)
