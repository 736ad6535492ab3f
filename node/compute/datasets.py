"""Datasets as content-addressed safetensors blobs: a synthetic generator and digits.

A task names its data by hash only, so the blob bytes must be the same on every node:
the generator is seeded numpy (no global RNG) and digits is scikit-learn's bundled copy
(offline), both serialised with sorted keys through safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from node.compute.tensors import MAX_BLOB_BYTES, blob_id, decode_blob, encode_blob
from protocol.errors import BlobError

MAX_SAMPLES = 1 << 20


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor  # float32 [N, *input_shape]
    y: torch.Tensor  # int64 [N]
    blob: bytes

    @property
    def digest(self) -> bytes:
        return blob_id(self.blob)

    def __len__(self) -> int:
        return int(self.y.shape[0])


def make_dataset(x: np.ndarray, y: np.ndarray) -> Dataset:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return Dataset(xt, yt, encode_blob({"x": xt, "y": yt}))


def synthetic(n: int, input_shape: tuple[int, ...], num_classes: int, seed: int) -> Dataset:
    """Separable-but-noisy classes around seeded random centres (learnable, deterministic)."""
    if not 1 <= n <= MAX_SAMPLES:
        raise BlobError(f"synthetic dataset size {n} out of range")
    rng = np.random.Generator(np.random.PCG64(seed))
    dim = int(np.prod(input_shape))
    centres = rng.standard_normal((num_classes, dim))
    y = rng.integers(0, num_classes, size=n)
    x = centres[y] + 0.8 * rng.standard_normal((n, dim))
    return make_dataset(x.reshape((n, *input_shape)), y)


def digits() -> Dataset:
    """scikit-learn's 8x8 digits (1797 samples, 10 classes), features scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return make_dataset(d.data / 16.0, d.target)


def load(blob: bytes, digest_: bytes, input_shape: tuple[int, ...]) -> Dataset:
    """Decode a fetched dataset blob, checking its hash and layout against the spec."""
    arrays = decode_blob(blob, digest_of_blob=digest_, max_bytes=MAX_BLOB_BYTES)
    if set(arrays) != {"x", "y"}:
        raise BlobError("dataset blob must hold exactly 'x' and 'y'")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != torch.float32 or y.dtype != torch.int64 or x.ndim != len(input_shape) + 1 or y.ndim != 1:
        raise BlobError("dataset tensors have the wrong dtypes or ranks")
    if tuple(x.shape[1:]) != tuple(input_shape) or x.shape[0] != y.shape[0]:
        raise BlobError(f"dataset shape {list(x.shape)} does not match the spec's input {list(input_shape)}")
    return Dataset(x, y, blob)
