"""A solver's proof of learning as content-addressed blobs, fetched from the ledger's root.

Every hash in the proof is SHA-256 of bytes we can serve, so the whole proof is
fetchable by hash with the plain blob protocol, starting from the Merkle root the solver
committed on the ledger, with no index message and no trust in who serves it:

- a Merkle node (RFC 9162) is `sha256(0x01 | left | right)`: its blob is those 65 bytes;
- a leaf is `sha256(0x00 | encode_record(CheckpointLeaf))`: its blob is those bytes;
- a leaf's weights/optimizer hash is `canonical_hash([tensor digests])`: its blob is
  `pack([digests])`;
- a tensor digest is `sha256(TENSOR_DOMAIN | pack([dtype, shape]) | bytes)`: its blob is
  that preimage, so the tensor comes back bit-exact and already checked.

The transport checks each blob's hash on arrival; this module checks structure (which
hash sits where, the dtype and shape the spec implies), so a verifier reading
checkpoint i walks log2(n) nodes down from the root and gets exactly the committed
state, or a BlobError.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import numpy as np
import torch

from node.compute.checkpoints import DTYPE_NAMES
from node.compute.trainer import Run, State
from protocol.encoding import pack, unpack
from protocol.errors import BlobError, PolnetError
from protocol.pol.merkle import LEAF_PREFIX, NODE_PREFIX, CheckpointLeaf, leaf_hash
from protocol.pol.ops import TENSOR_DOMAIN, state_slots_per_param
from protocol.pol.spec import TaskSpec, param_shapes
from protocol.records import decode_record, encode_record

#: Largest Merkle-node, leaf or digest-list blob (a digest list holds one hash per tensor).
MAX_META_BLOB = 64 * 1024
NODE_BLOB_LEN = 1 + 32 + 32

Put = Callable[[bytes], bytes]
Get = Callable[[bytes, int], bytes]
#: Fetch many blobs at once ahead of the `get`s that read them (a round trip each
#: otherwise); (digest, max size) pairs. Optional: without it every read fetches alone.
Prefetch = Callable[[list[tuple[bytes, int]]], None]


# --- the solver: write every blob of a proof ---------------------------------------------------


def tensor_blob(t: torch.Tensor) -> bytes:
    """A tensor's blob: the preimage of its digest, so its blob id is its tensor digest."""
    return _tensor_blob(t)


def _tensor_blob(t: torch.Tensor) -> bytes:
    arr = t.detach().contiguous().cpu().numpy()
    le = arr.astype(arr.dtype.newbyteorder("<"))
    return TENSOR_DOMAIN + pack([str(arr.dtype), list(arr.shape)]) + le.tobytes()


def _put_group(put: Put, tensors: list[torch.Tensor]) -> bytes:
    return put(pack([put(_tensor_blob(t)) for t in tensors]))


def _put_tree(put: Put, hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return put(NODE_PREFIX + _put_tree(put, hashes[:k]) + _put_tree(put, hashes[k:]))


def publish_state(put: Put, state: State, step: int, data_seed: int) -> bytes:
    """Store one checkpoint's tensors, digest lists and leaf; returns the leaf hash."""
    w = _put_group(put, state.params)
    o = _put_group(put, state.opt)
    leaf = CheckpointLeaf(step, w, o, data_seed)
    digest = put(LEAF_PREFIX + encode_record(leaf))
    if digest != leaf_hash(leaf):
        raise BlobError("leaf blob does not hash to the leaf hash")
    return digest


def publish_run(put: Put, run: Run) -> bytes:
    """Store the whole proof of a trained run; returns its Merkle root (what goes on chain)."""
    spec = run.spec
    k = spec.checkpoint_interval
    leaves = [publish_state(put, s, i * k, spec.data_seed) for i, s in enumerate(run.checkpoints())]
    return _put_tree(put, leaves)


# --- verifiers and submitters: read one checkpoint from the root -------------------------------


def leaf_at(get: Get, root: bytes, n: int, index: int) -> CheckpointLeaf:
    """Walk from `root` (a tree of `n` leaves) down to leaf `index`."""
    if not 0 <= index < n:
        raise BlobError(f"checkpoint {index} outside a proof of {n}")
    digest = root
    while n > 1:
        blob = get(digest, NODE_BLOB_LEN)
        if len(blob) != NODE_BLOB_LEN or blob[:1] != NODE_PREFIX:
            raise BlobError("a Merkle node blob has the wrong shape")
        k = 1 << ((n - 1).bit_length() - 1)
        if index < k:
            digest, n = blob[1:33], k
        else:
            digest, n, index = blob[33:], n - k, index - k
    blob = get(digest, MAX_META_BLOB)
    if blob[:1] != LEAF_PREFIX:
        raise BlobError("a leaf blob lacks the leaf prefix")
    try:
        return decode_record(CheckpointLeaf, blob[1:])
    except PolnetError as exc:
        raise BlobError(f"leaf blob does not decode: {exc}") from None


def _group(
    get: Get, digest: bytes, shapes: list[tuple[int, ...]], dtype: str, prefetch: Prefetch | None
) -> list[torch.Tensor]:
    try:
        digests = unpack(get(digest, MAX_META_BLOB))
    except PolnetError as exc:
        raise BlobError(f"digest list does not decode: {exc}") from None
    if not isinstance(digests, list) or len(digests) != len(shapes):
        raise BlobError(f"digest list holds {len(digests) if isinstance(digests, list) else '?'} "
                        f"entries, the spec implies {len(shapes)}")
    if any(not isinstance(d, bytes) or len(d) != 32 for d in digests):
        raise BlobError("a tensor digest is not 32 bytes")
    if prefetch is not None:
        prefetch([(d, _tensor_size(s, dtype)) for d, s in zip(digests, shapes, strict=True)])
    return [_tensor(get, d, s, dtype) for d, s in zip(digests, shapes, strict=True)]


def _tensor_size(shape: tuple[int, ...], dtype: str) -> int:
    header = TENSOR_DOMAIN + pack([dtype, list(shape)])
    return len(header) + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _tensor(get: Get, digest: bytes, shape: tuple[int, ...], dtype: str) -> torch.Tensor:
    header = TENSOR_DOMAIN + pack([dtype, list(shape)])
    size = _tensor_size(shape, dtype) - len(header)
    blob = get(digest, len(header) + size)
    if not blob.startswith(header) or len(blob) != len(header) + size:
        raise BlobError(f"tensor blob is not a {dtype}{list(shape)}")
    arr = np.frombuffer(blob[len(header):], dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    return torch.from_numpy(arr.reshape(shape).copy())


#: Largest single tensor a node fetches by digest alone (an op input or output named in a
#: dispute reveal): the spec limits bound activations per sample and the batch.
MAX_TENSOR_BLOB = 512 * 1024 * 1024
MAX_TENSOR_DIMS = 8
_DTYPES = frozenset({"float32", "float64", "int64"})


def tensor_by_digest(get: Get, digest: bytes, max_bytes: int = MAX_TENSOR_BLOB) -> torch.Tensor:
    """A tensor whose dtype and shape nobody told us (an intermediate value of a step),
    fetched by its digest: the blob's hash is checked on arrival, and its header must
    name an allowed dtype and a shape whose size is exactly the bytes that follow."""
    blob = get(digest, max_bytes)
    if not blob.startswith(TENSOR_DOMAIN):
        raise BlobError("not a tensor blob")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(blob), max_array_len=MAX_TENSOR_DIMS + 2,
                                max_str_len=16, max_bin_len=0, max_map_len=0, max_ext_len=0)
    unpacker.feed(blob[len(TENSOR_DOMAIN):])
    try:
        header = unpacker.unpack()
    except (ValueError, msgpack.OutOfData, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BlobError(f"tensor blob header does not decode: {exc}") from None
    if (not isinstance(header, list) or len(header) != 2 or header[0] not in _DTYPES
            or not isinstance(header[1], list) or len(header[1]) > MAX_TENSOR_DIMS
            or not all(type(d) is int and 0 <= d < 2**40 for d in header[1])):
        raise BlobError("tensor blob header is not [dtype, shape]")
    dtype, shape = str(header[0]), tuple(int(d) for d in header[1])
    start = len(TENSOR_DOMAIN) + unpacker.tell()
    if blob[:start] != TENSOR_DOMAIN + pack([dtype, list(shape)]):
        raise BlobError("tensor blob header is not canonical")
    want = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(blob) - start != want:
        raise BlobError(f"tensor blob holds {len(blob) - start} bytes, a {dtype}{list(shape)} needs {want}")
    arr = np.frombuffer(blob[start:], dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    return torch.from_numpy(arr.reshape(shape).copy())


def fetch_state(get: Get, spec: TaskSpec, leaf: CheckpointLeaf, prefetch: Prefetch | None = None) -> State:
    """The committed checkpoint behind `leaf`, every tensor checked by its digest."""
    dtype = DTYPE_NAMES[spec.profile.dtype]
    shapes = [tuple(s) for s in param_shapes(spec)]
    ns = state_slots_per_param(spec)
    params = _group(get, leaf.weights_hash, shapes, dtype, prefetch)
    opt = _group(get, leaf.optimizer_hash, [s for s in shapes for _ in range(ns)], dtype, prefetch)
    return State(params, opt)
