"""The proof of learning: a Merkle tree over the checkpoints.

Leaves are (step, weights hash, optimizer-state hash, data-order seed); the root is the
one 32-byte value that goes on the ledger. Any checkpoint can then be shown to belong to
the commitment with log2(n) hashes, so a verifier can fetch just the two checkpoints of
its segment and know they are the ones the solver committed to before the segment was
chosen. The tree is RFC 9162's (Certificate Transparency): domain-separated leaf and
node hashes, unbalanced right edge, no duplicated leaves (so no second-preimage games).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.encoding import sha256
from protocol.errors import ValidationError
from protocol.records import encode_record
from protocol.schema import U32, U64, Hash32, Len

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: A tree of MAX_CHECKPOINTS leaves needs 12 siblings; 32 leaves generous room.
MAX_PROOF_DEPTH = 32


@dataclass(frozen=True, slots=True)
class CheckpointLeaf:
    step: U32
    weights_hash: Hash32
    optimizer_hash: Hash32
    data_order_seed: U64


@dataclass(frozen=True, slots=True)
class MerkleProof:
    index: U32
    size: U32
    path: Annotated[tuple[Hash32, ...], Len(0, MAX_PROOF_DEPTH)]


def leaf_hash(leaf: CheckpointLeaf) -> bytes:
    return sha256(LEAF_PREFIX + encode_record(leaf))


def _node(left: bytes, right: bytes) -> bytes:
    return sha256(NODE_PREFIX + left + right)


def _split(n: int) -> int:
    """Largest power of two strictly below n (RFC 9162's k)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return _node(_root(hashes[:k]), _root(hashes[k:]))


def merkle_root(leaf_hashes: list[bytes]) -> bytes:
    if not leaf_hashes:
        raise ValidationError("a proof needs at least one checkpoint")
    return _root(leaf_hashes)


def _path(index: int, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return [*_path(index, hashes[:k]), _root(hashes[k:])]
    return [*_path(index - k, hashes[k:]), _root(hashes[:k])]


def inclusion_proof(leaf_hashes: list[bytes], index: int) -> MerkleProof:
    if not 0 <= index < len(leaf_hashes):
        raise ValidationError(f"leaf {index} outside a tree of {len(leaf_hashes)}")
    return MerkleProof(index, len(leaf_hashes), tuple(_path(index, leaf_hashes)))


def verify_inclusion(root: bytes, leaf_digest: bytes, proof: MerkleProof) -> bool:
    """RFC 9162 section 2.1.3.2: recompute the root from the leaf and its audit path."""
    if proof.index >= proof.size:
        return False
    fn, sn, r = proof.index, proof.size - 1, leaf_digest
    for p in proof.path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
