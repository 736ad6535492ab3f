"""Canonical tensor digests and safetensors blobs, checked on the way in.

Weights, optimizer state, datasets and op inputs arrive from peers: they are decoded
only with safetensors (never pickle), bounded in size before parsing, and checked for
the exact names, shapes and dtypes the spec implies before any digest is trusted.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from protocol.encoding import sha256
from protocol.errors import BlobError
from protocol.pol.ops import tensor_digest, tensor_digest_prefix

#: Largest blob a node accepts for one checkpoint, dataset or op input (bounded by the spec
#: limits: 2^26 params x 3 state slots x 8 bytes is ~1.6 GiB; tests use far less).
MAX_BLOB_BYTES = 2 * 1024**3
ALLOWED_DTYPES = frozenset({"float32", "float64", "int64", "uint8"})  # uint8: byte tokens


#: Names of the dtypes a digest is computed for without numpy's generic path.
_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.int64: "int64",
    torch.uint8: "uint8",
}


def digest(t: torch.Tensor) -> bytes:
    """Content id of a tensor: dtype, shape and its little-endian bytes (`tensor_digest`).

    The bytes are streamed into the hash from the tensor's own memory: a solver digests
    every checkpoint, so copies of each (to numpy's little-endian, to bytes, into one
    buffer with the prefix) would cost as much as the hashing.
    """
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if not t.is_contiguous():
        t = t.contiguous()
    name = _DTYPE_NAMES.get(t.dtype)
    if name is None or sys.byteorder != "little":
        arr = t.numpy()
        arr = arr.astype(arr.dtype.newbyteorder("<"))
        return tensor_digest(str(arr.dtype.newbyteorder("=")), tuple(arr.shape), arr.tobytes())
    h = hashlib.sha256(_prefix(name, tuple(t.shape)))
    if t.numel():
        h.update(t.numpy().data)  # a C-contiguous little-endian buffer: the bytes themselves
    return h.digest()


@functools.lru_cache(maxsize=4096)
def _prefix(dtype: str, shape: tuple[int, ...]) -> bytes:
    return tensor_digest_prefix(dtype, shape)


def encode_blob(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return bytes(st_save({k: v.detach().contiguous().cpu().numpy() for k, v in sorted(tensors.items())}))


def blob_id(data: bytes) -> bytes:
    return sha256(data)


def decode_blob(
    data: bytes,
    expected: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
    digest_of_blob: bytes | None = None,
    max_bytes: int = MAX_BLOB_BYTES,
) -> dict[str, torch.Tensor]:
    """Parse a safetensors blob; refuse anything oversized, corrupt, or unexpected."""
    if len(data) > max_bytes:
        raise BlobError(f"blob of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    if digest_of_blob is not None and blob_id(data) != digest_of_blob:
        raise BlobError("blob does not match its content hash")
    try:
        arrays = st_load(bytes(data))
    except (SafetensorError, ValueError, OSError) as exc:
        raise BlobError(f"not a valid safetensors blob: {exc}") from exc
    for name, arr in arrays.items():
        if str(arr.dtype) not in ALLOWED_DTYPES:
            raise BlobError(f"tensor {name!r} has disallowed dtype {arr.dtype}")
    if expected is not None:
        if set(arrays) != set(expected):
            raise BlobError(f"blob holds tensors {sorted(arrays)[:8]}, expected {sorted(expected)[:8]}")
        for name, (dtype, shape) in expected.items():
            arr = arrays[name]
            if str(arr.dtype) != dtype or tuple(arr.shape) != shape:
                raise BlobError(
                    f"tensor {name!r} is {arr.dtype}{list(arr.shape)}, expected {dtype}{list(shape)}"
                )
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


class TensorStore:
    """Content-addressed tensors (op inputs/outputs shown to a referee), bounded."""

    def __init__(self, max_items: int = 1 << 16) -> None:
        self._items: dict[bytes, torch.Tensor] = {}
        self._max = max_items

    def put(self, t: torch.Tensor) -> bytes:
        d = digest(t)
        if d not in self._items:
            if len(self._items) >= self._max:
                raise BlobError("tensor store is full")
            self._items[d] = t.detach().clone()
        return d

    def get(self, d: bytes) -> torch.Tensor:
        """Fetch by digest and re-check it: a store shared with peers may be poisoned."""
        t = self._items.get(d)
        if t is None:
            raise BlobError(f"tensor {d.hex()[:16]} not available")
        if digest(t) != d:
            raise BlobError(f"tensor {d.hex()[:16]} does not match its digest")
        return t

    def __len__(self) -> int:
        return len(self._items)
