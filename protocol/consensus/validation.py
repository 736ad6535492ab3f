"""Block validity: the paper's valid(v), written as one commented check per rule.

A block is checked against the chain it would extend (the previous block, its
certificate's validator set, the current app hash) before anyone prevotes for it and
before block sync applies it, so a block that one honest node accepts every honest node
accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from protocol.errors import ValidationError

from .block import ZERO_HASH, Block, block_hash, certificate_hash, evidence_root, tx_root
from .evidence import DuplicateVoteEvidence, EvidencePool, InvalidEvidence, evidence_id, verify_evidence
from .limits import MAX_BLOCK_TX_BYTES
from .validators import ValidatorSet
from .votes import CommitCertificate, Verifier, verify_certificate


class InvalidBlock(ValidationError):
    """A block that breaks a consensus rule; honest validators prevote nil on it."""


@dataclass(frozen=True, slots=True)
class ChainTip:
    """What a block at `height` must extend."""

    chain_id: str
    height: int
    prev_block: Block | None
    prev_hash: bytes  # block_hash(prev_block), ZERO_HASH before the first block
    prev_vset: ValidatorSet | None  # the set that committed prev_block
    vset: ValidatorSet  # the set of `height`
    app_hash: bytes
    genesis_time: int
    #: The validator powers of a recent height (None when unknown or past the evidence
    #: horizon): evidence is judged against the set of the height it happened at.
    powers_at: Callable[[int], Mapping[bytes, int] | None]
    #: Who proposes round r at `height` (the set's proposer priority; the same schedule
    #: the node's consensus machine uses to accept proposals).
    proposer: Callable[[int], bytes]
    #: The latest block round this node can be asked to judge: the rounds it accepts
    #: messages for (live), or the round of the verified certificate that committed the
    #: block (sync). Bounds the proposer schedule a forged header can make us compute.
    max_round: int


def check_block(tip: ChainTip, block: Block, evidence: EvidencePool, verifier: Verifier) -> None:
    """Raise InvalidBlock unless `block` may be committed at `tip.height`."""
    h = block.header
    # Rule: the block is for the height being decided.
    if h.height != tip.height:
        raise InvalidBlock(f"block height {h.height}, expected {tip.height}")
    # Rule: it extends our last committed block.
    if h.prev_hash != tip.prev_hash:
        raise InvalidBlock("block does not extend the last committed block")
    # Rule: the block's round is one we can judge (no later than the rounds we accept
    # messages for, or than the round of the certificate that committed it).
    if h.round > tip.max_round:
        raise InvalidBlock(f"block round {h.round} beyond round {tip.max_round}")
    # Rule: the proposer is the proposer of the block's round by the height's proposer
    # priority, not merely some validator: the ledger pays the block's proposer its fees
    # and rewards, so a Byzantine proposer must not be able to name someone else
    # (issue 17: such blocks were committed and paid an honest validator).
    if h.proposer != tip.proposer(h.round):
        raise InvalidBlock(f"block of round {h.round} names a proposer other than that round's")
    # Rule: time never goes backwards.
    prev_time = tip.genesis_time if tip.prev_block is None else tip.prev_block.header.time
    if h.time < prev_time:
        raise InvalidBlock("block time before the previous block's")
    # Rule: the header carries the state root after the previous block.
    if h.app_hash != tip.app_hash:
        raise InvalidBlock("app hash does not match the state after the previous block")
    # Rule: the body matches the header's roots.
    if h.tx_root != tx_root(block.txs) or h.evidence_root != evidence_root(block.evidence):
        raise InvalidBlock("tx or evidence root does not match the body")
    # Rule: transactions fit the block size budget.
    if sum(len(tx) for tx in block.txs) > MAX_BLOCK_TX_BYTES:
        raise InvalidBlock("block transactions exceed the size budget")
    _check_last_commit(tip, block, verifier)
    _check_evidence(tip, block, evidence, verifier)


def _check_last_commit(tip: ChainTip, block: Block, verifier: Verifier) -> None:
    cert = block.last_commit
    # Rule: the first block has no last commit; every later one carries one.
    if tip.prev_block is None or tip.prev_vset is None:
        if cert is not None or block.header.last_commit_hash != ZERO_HASH:
            raise InvalidBlock("first block must not carry a last commit")
        return
    if cert is None:
        raise InvalidBlock("missing last commit")
    # Rule: the header commits to exactly this certificate (the beacon input).
    if block.header.last_commit_hash != certificate_hash(cert):
        raise InvalidBlock("last commit hash does not match the certificate")
    # Rule: the certificate is for the previous block.
    if cert.height != tip.height - 1 or cert.block_hash != tip.prev_hash:
        raise InvalidBlock("last commit certifies another block")
    # Rule: it carries >2/3 of the previous set's power in valid precommits.
    try:
        verify_certificate(tip.chain_id, cert, tip.prev_vset.powers(), verifier)
    except ValidationError as exc:
        raise InvalidBlock(f"bad last commit: {exc}") from exc


def _check_evidence(tip: ChainTip, block: Block, pool: EvidencePool, verifier: Verifier) -> None:
    ids: set[bytes] = set()
    for ev in block.evidence:
        # Rule: one piece of evidence per equivocation within a block.
        eid = evidence_id(ev)
        if eid in ids:
            raise InvalidBlock("duplicate evidence in block")
        ids.add(eid)
        # Rule: never committed before, and not older than the evidence horizon.
        if pool.is_committed(ev) or pool.is_stale(ev, tip.height):
            raise InvalidBlock("evidence already committed or too old")
        # Rule: no evidence from the future.
        if ev.height >= tip.height:
            raise InvalidBlock("evidence from a height not yet decided")
        try:
            check_evidence(tip, ev, verifier)
        except ValidationError as exc:
            raise InvalidBlock(f"bad evidence: {exc}") from exc


def check_evidence(tip: ChainTip, ev: DuplicateVoteEvidence, verifier: Verifier) -> None:
    """The check a proposer applies before including evidence and a validator before
    accepting a block with it: the same function, so they can never disagree."""
    # Rule: we still know the validator set of the evidence's height.
    powers = tip.powers_at(ev.height)
    if powers is None:
        raise InvalidEvidence(f"no validator set known for height {ev.height}")
    # Rule: it proves an equivocation by a member of that set.
    verify_evidence(tip.chain_id, ev, powers, verifier)


def check_committed(tip: ChainTip, block: Block, cert: CommitCertificate, verifier: Verifier) -> None:
    """Block sync: the certificate proves >2/3 of this height's set committed `block`.
    Run it before check_block, whose round rule then trusts the certificate's round."""
    # Rule: the certificate names this block at this height.
    if cert.height != tip.height or cert.block_hash != block_hash(block):
        raise InvalidBlock("certificate is for another block")
    # Rule: a block is committed no earlier than the round it was proposed in.
    if block.header.round > cert.round:
        raise InvalidBlock(f"block of round {block.header.round} committed in round {cert.round}")
    try:
        verify_certificate(tip.chain_id, cert, tip.vset.powers(), verifier)
    except ValidationError as exc:
        raise InvalidBlock(f"bad commit certificate: {exc}") from exc


def check_proposal(round_: int, valid_round: int, block: Block) -> None:
    """What a proposal says about its block, checked before the block itself.

    With the machine's "only the round's proposer may propose" and check_block's
    proposer rule, these make the block's proposer the proposal's signer for every fresh
    proposal, and keep a re-proposal's block the one its maker built (a valid value
    keeps its header, hence its id, across rounds: paper, lines 14-16)."""
    # Rule: a fresh proposal (valid round -1) carries a block built in this very round.
    if valid_round == -1 and block.header.round != round_:
        raise InvalidBlock(f"fresh proposal of round {round_} carries a block of round {block.header.round}")
    # Rule: a re-proposal carries a block built no later than its valid round (honest
    # validators prevote, in round vr, only a block proposed in round vr).
    if valid_round >= 0 and block.header.round > valid_round:
        raise InvalidBlock(f"re-proposal with valid round {valid_round} carries a block of round "
                           f"{block.header.round}")
