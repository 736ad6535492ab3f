"""Checkpoint blobs: weights and optimizer state as safetensors, checked against leaves.

The ledger commits to tensor digests (via the Merkle leaf), not to blob bytes, so a
checkpoint is accepted only if every tensor has the name, dtype and shape the spec
implies and the digests hash to the committed leaf.
"""

from __future__ import annotations

import torch

from node.compute.tensors import blob_id, decode_blob, digest, encode_blob
from node.compute.trainer import State, base_state
from protocol.errors import BlobError
from protocol.pol.merkle import CheckpointLeaf
from protocol.pol.ops import group_hash, state_slots_per_param
from protocol.pol.spec import DType, TaskSpec, param_shapes

DTYPE_NAMES = {DType.FLOAT32: "float32", DType.FLOAT64: "float64"}


def _names(spec: TaskSpec) -> dict[str, tuple[str, tuple[int, ...]]]:
    dt = DTYPE_NAMES[spec.profile.dtype]
    shapes = param_shapes(spec)
    ns = state_slots_per_param(spec)
    out = {f"w.{i:04d}": (dt, s) for i, s in enumerate(shapes)}
    out.update({f"o.{i * ns + j:04d}": (dt, s) for i, s in enumerate(shapes) for j in range(ns)})
    return out


def encode_checkpoint(state: State) -> bytes:
    tensors = {f"w.{i:04d}": p for i, p in enumerate(state.params)}
    tensors.update({f"o.{i:04d}": o for i, o in enumerate(state.opt)})
    return encode_blob(tensors)


def checkpoint_bytes(spec: TaskSpec) -> int:
    """Raw tensor bytes of one checkpoint (for proof-size comparisons)."""
    width = 4 if spec.profile.dtype is DType.FLOAT32 else 8
    total = 0
    for _, (_, shape) in _names(spec).items():
        n = 1
        for d in shape:
            n *= d
        total += n * width
    return total


def decode_checkpoint(spec: TaskSpec, blob: bytes, leaf: CheckpointLeaf) -> State:
    """Load a fetched checkpoint; refuse it unless it is exactly the committed one."""
    tensors = decode_blob(blob, expected=_names(spec))
    n = len(param_shapes(spec))
    params = [tensors[f"w.{i:04d}"] for i in range(n)]
    opt = [tensors[f"o.{i:04d}"] for i in range(n * state_slots_per_param(spec))]
    if group_hash([digest(p) for p in params]) != leaf.weights_hash:
        raise BlobError(f"checkpoint weights do not match the leaf of step {leaf.step}")
    if group_hash([digest(o) for o in opt]) != leaf.optimizer_hash:
        raise BlobError(f"checkpoint optimizer state does not match the leaf of step {leaf.step}")
    return State([p.clone() for p in params], [o.clone() for o in opt])


def encode_weights(params: list[torch.Tensor]) -> bytes:
    """A weights file (`w.0000`, ...): what `polnet task result` writes and a base is."""
    return encode_blob({f"w.{i:04d}": p for i, p in enumerate(params)})


def decode_weights(spec: TaskSpec, blob: bytes) -> list[torch.Tensor]:
    """The parameters in a weights file (or a checkpoint), checked against the spec's
    names, shapes and dtype; optimizer tensors, if any, are ignored."""
    names = {k: v for k, v in _names(spec).items() if k.startswith("w.")}
    tensors = decode_blob(blob)
    weights = {k: v for k, v in tensors.items() if k.startswith("w.")}
    if set(weights) != set(names):
        raise BlobError(f"weights hold {len(weights)} tensors, the spec has {len(names)} parameters")
    for name, (dtype, shape) in names.items():
        t = weights[name]
        if str(t.numpy().dtype) != dtype or tuple(t.shape) != shape:
            raise BlobError(f"tensor {name!r} is {t.dtype}{list(t.shape)}, expected {dtype}{list(shape)}")
    return [weights[f"w.{i:04d}"].clone() for i in range(len(names))]


def weights_hash(params: list[torch.Tensor]) -> bytes:
    """What a base names: the group hash of its weight digests (a checkpoint leaf's)."""
    return group_hash([digest(p) for p in params])


def load_base(spec: TaskSpec, blob: bytes) -> State:
    """A fine-tuning task's checkpoint 0 from its fetched base blob (checked by hash)."""
    if spec.base is None:
        raise BlobError("the spec names no base model")
    if blob_id(blob) != spec.base.blob_hash:
        raise BlobError("the base blob does not match the spec's base blob hash")
    return base_state(spec, decode_weights(spec, blob))


def clone_state(state: State) -> State:
    return State([p.clone() for p in state.params], [o.clone() for o in state.opt])


def zeros_like_state(state: State) -> list[torch.Tensor]:
    return [torch.zeros_like(o) for o in state.opt]
