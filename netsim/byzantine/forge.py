"""Invalid proposals, one kind per consensus rule: what an `invalid_blocks` proposer sends.

Each forger takes the honest proposal the Byzantine node's own core just made and breaks
exactly one rule of protocol/consensus/validation.py (or of the machine's proposal
rules), keeping the rest consistent (roots, hashes), so that the one broken rule is what
an honest node must catch. A kind that cannot apply at this height or round (no previous
block to contradict, no earlier round to claim) returns None and the caller moves on to
the next kind. Nothing here can sign for an honest validator: forged evidence against
one carries signatures that do not verify, which is exactly what must be refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from netsim.config import INVALID_BLOCK_KINDS
from protocol.consensus.block import Block, certificate_hash, evidence_root, tx_root
from protocol.consensus.evidence import DuplicateVoteEvidence, make_evidence
from protocol.consensus.limits import MAX_BLOCK_TX_BYTES, MAX_TX_BYTES
from protocol.consensus.messages import Proposal
from protocol.consensus.node import ConsensusNode
from protocol.consensus.votes import SignedVote, Vote, VoteType, sign_vote
from protocol.encoding import sha256
from protocol.identity import Keypair

#: A key no validator set holds (the "non-validator" in the forgeries).
STRANGER = Keypair.derive("netsim/byzantine/stranger")


@dataclasses.dataclass(frozen=True)
class Context:
    """What a forger may use: the Byzantine node's core, key, chain and a honest validator."""

    node: ConsensusNode
    key: Keypair
    chain_id: str
    now: int
    honest: bytes  # an honest validator of this height (to name, or to frame)


Forger = Callable[[Proposal, Context], Proposal | None]


def _junk(tag: str, p: Proposal) -> bytes:
    return sha256(f"netsim/byzantine/junk/{tag}/{p.height}/{p.round}".encode())


def _header(p: Proposal, **changes: Any) -> Proposal:
    block = p.block
    header = dataclasses.replace(block.header, **changes)
    return dataclasses.replace(p, block=dataclasses.replace(block, header=header))


def _body(p: Proposal, block: Block) -> Proposal:
    return dataclasses.replace(p, block=block)


def _with_evidence(p: Proposal, evidence: tuple[DuplicateVoteEvidence, ...]) -> Proposal:
    block = dataclasses.replace(p.block, evidence=evidence)
    header = dataclasses.replace(block.header, evidence_root=evidence_root(evidence))
    return _body(p, dataclasses.replace(block, header=header))


def _equivocation(key: Keypair, chain_id: str, height: int, p: Proposal) -> DuplicateVoteEvidence:
    votes = [
        sign_vote(chain_id, Vote(height, 0, VoteType.PREVOTE, _junk(f"ev{i}", p), key.public), key.sign)
        for i in range(2)
    ]
    return make_evidence(votes[0], votes[1])


def _last_commit(p: Proposal, change: Callable[[Any], Any]) -> Proposal | None:
    cert = p.block.last_commit
    if cert is None:
        return None
    forged = change(cert)
    block = dataclasses.replace(p.block, last_commit=forged)
    header = dataclasses.replace(block.header, last_commit_hash=certificate_hash(forged))
    return _body(p, dataclasses.replace(block, header=header))


def wrong_proposer(p: Proposal, c: Context) -> Proposal | None:
    # The finding of issue 17: the block names an honest validator, who would be paid.
    return _header(p, proposer=c.honest)


def non_validator_proposer(p: Proposal, c: Context) -> Proposal | None:
    return _header(p, proposer=STRANGER.public)


def wrong_round(p: Proposal, c: Context) -> Proposal | None:
    # A well-formed header of the next round (naming its proposer), proposed fresh now.
    nxt = p.round + 1
    return _header(p, round=nxt, proposer=c.node.machine.inp.proposer(nxt))


def wrong_height(p: Proposal, c: Context) -> Proposal | None:
    return _header(p, height=p.block.header.height + 1)


def wrong_prev_hash(p: Proposal, c: Context) -> Proposal | None:
    return _header(p, prev_hash=_junk("prev", p))


def time_before_previous(p: Proposal, c: Context) -> Proposal | None:
    last = c.node.last_block
    prev = c.node.cfg.genesis_time if last is None else last.header.time
    return _header(p, time=prev - 1) if prev >= 1 else None


def time_far_ahead(p: Proposal, c: Context) -> Proposal | None:
    return _header(p, time=c.now + c.node.cfg.max_clock_drift_ms + 1_000)


def wrong_app_hash(p: Proposal, c: Context) -> Proposal | None:
    return _header(p, app_hash=_junk("app", p))


def tx_root_mismatch(p: Proposal, c: Context) -> Proposal | None:
    return _body(p, dataclasses.replace(p.block, txs=(b"netsim/byzantine/unrooted", *p.block.txs)))


def evidence_root_mismatch(p: Proposal, c: Context) -> Proposal | None:
    return _header(p, evidence_root=_junk("evroot", p))


def oversize_txs(p: Proposal, c: Context) -> Proposal | None:
    count = MAX_BLOCK_TX_BYTES // MAX_TX_BYTES + 1
    txs = tuple(i.to_bytes(4, "big") + b"\x00" * (MAX_TX_BYTES - 4) for i in range(count))
    block = dataclasses.replace(p.block, txs=txs)
    header = dataclasses.replace(block.header, tx_root=tx_root(txs))
    return _body(p, dataclasses.replace(block, header=header))


def missing_last_commit(p: Proposal, c: Context) -> Proposal | None:
    return None if p.block.last_commit is None else _body(p, dataclasses.replace(p.block, last_commit=None))


def last_commit_hash_mismatch(p: Proposal, c: Context) -> Proposal | None:
    return None if p.block.last_commit is None else _header(p, last_commit_hash=_junk("lch", p))


def last_commit_other_block(p: Proposal, c: Context) -> Proposal | None:
    return _last_commit(p, lambda cert: dataclasses.replace(cert, block_hash=_junk("lcb", p)))


def last_commit_below_quorum(p: Proposal, c: Context) -> Proposal | None:
    return _last_commit(p, lambda cert: dataclasses.replace(cert, sigs=cert.sigs[:1]))


def last_commit_bad_signature(p: Proposal, c: Context) -> Proposal | None:
    def bad(cert: Any) -> Any:
        first = dataclasses.replace(cert.sigs[0], signature=_junk("sig", p) * 2)
        return dataclasses.replace(cert, sigs=(first, *cert.sigs[1:]))

    return _last_commit(p, bad)


def forged_evidence(p: Proposal, c: Context) -> Proposal | None:
    # Frames an honest validator: its "double vote" carries signatures nobody made.
    if p.height < 2:
        return None
    votes = [
        SignedVote(Vote(p.height - 1, 0, VoteType.PREVOTE, _junk(f"frame{i}", p), c.honest),
                   _junk("s", p) * 2)
        for i in range(2)
    ]
    return _with_evidence(p, (make_evidence(votes[0], votes[1]),))


def evidence_from_the_future(p: Proposal, c: Context) -> Proposal | None:
    return _with_evidence(p, (_equivocation(c.key, c.chain_id, p.height, p),))


def duplicate_evidence(p: Proposal, c: Context) -> Proposal | None:
    if p.height < 2:
        return None
    ev = _equivocation(c.key, c.chain_id, p.height - 1, p)
    return _with_evidence(p, (ev, ev))


def evidence_of_a_non_validator(p: Proposal, c: Context) -> Proposal | None:
    if p.height < 2:
        return None
    return _with_evidence(p, (_equivocation(STRANGER, c.chain_id, p.height - 1, p),))


def unproven_valid_round(p: Proposal, c: Context) -> Proposal | None:
    # Claims the previous round's proof of lock for a block of that round (a well-formed
    # header naming that round's proposer), with no such prevotes anywhere (paper, line 28).
    if p.round < 1:
        return None
    prev = p.round - 1
    forged = _header(p, round=prev, proposer=c.node.machine.inp.proposer(prev))
    return dataclasses.replace(forged, valid_round=prev)


FORGERS: dict[str, Forger] = {
    "wrong_proposer": wrong_proposer,
    "non_validator_proposer": non_validator_proposer,
    "wrong_round": wrong_round,
    "wrong_height": wrong_height,
    "wrong_prev_hash": wrong_prev_hash,
    "time_before_previous": time_before_previous,
    "time_far_ahead": time_far_ahead,
    "wrong_app_hash": wrong_app_hash,
    "tx_root_mismatch": tx_root_mismatch,
    "evidence_root_mismatch": evidence_root_mismatch,
    "oversize_txs": oversize_txs,
    "missing_last_commit": missing_last_commit,
    "last_commit_hash_mismatch": last_commit_hash_mismatch,
    "last_commit_other_block": last_commit_other_block,
    "last_commit_below_quorum": last_commit_below_quorum,
    "last_commit_bad_signature": last_commit_bad_signature,
    "forged_evidence": forged_evidence,
    "evidence_from_the_future": evidence_from_the_future,
    "duplicate_evidence": duplicate_evidence,
    "evidence_of_a_non_validator": evidence_of_a_non_validator,
    "unproven_valid_round": unproven_valid_round,
}
assert tuple(FORGERS) == INVALID_BLOCK_KINDS, "netsim.config.INVALID_BLOCK_KINDS and FORGERS disagree"


def forge(kinds: tuple[str, ...], start: int, p: Proposal, c: Context) -> tuple[str, Proposal]:
    """The first kind from `start` (cyclically) that applies here, and its proposal."""
    for i in range(len(kinds)):
        kind = kinds[(start + i) % len(kinds)]
        out = FORGERS[kind](p, c)
        if out is not None:
            return kind, out
    return "wrong_app_hash", wrong_app_hash(p, c) or p  # always applies
