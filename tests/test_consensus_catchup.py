"""Restart and catch-up rules of the consensus core: start from a snapshot, believe a
peer is ahead only on a signed certificate, catch up before voting, buffer what cannot
be counted yet within per-sender bounds, and rejoin validators many rounds ahead."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from netsim.scenarios.consensus import ConsensusScenario, HashChainApp, genesis_validators
from netsim.sim import node_keys
from protocol.app import BlockContext, BlockOutcome, Validator
from protocol.commands import (
    TOPIC_CONSENSUS,
    Command,
    MessageReceived,
    Persist,
    Publish,
    SendTo,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.consensus.block import block_hash
from protocol.consensus.messages import BlockRequest, BlockResponse, Proposal, Status
from protocol.consensus.node import (
    PERSIST_BLOCK,
    PERSIST_SNAPSHOT,
    TIMER_NEXT_HEIGHT,
    ConsensusConfig,
    ConsensusNode,
)
from protocol.consensus.snapshot import BadSnapshot, decode_snapshot, encode_snapshot
from protocol.consensus.sync import FutureBuffer
from protocol.consensus.votes import CommitSig, SignedVote, Vote, VoteType, sign_vote
from protocol.errors import ValidationError
from protocol.identity import Keypair
from tests.test_consensus_node import _chain

CHAIN = "polnet-consensus-sim"


# --- a certified chain of 4 validators (netsim) and a validator that restarts into it ---------


def _validator(sc: ConsensusScenario, index: int = 0, **cfg: int) -> tuple[ConsensusNode, list[Keypair]]:
    keys = node_keys(sc.sim_config())
    vals = genesis_validators(sc)
    config = ConsensusConfig(chain_id=CHAIN, genesis_validators=vals, **cfg)
    return ConsensusNode(config, HashChainApp(vals), keys[index]), keys


def _from(node: ConsensusNode, now: int, sender: bytes, body: object, raw: bytes = b"") -> list[Command]:
    return node.handle(now, MessageReceived(TOPIC_CONSENSUS, sender, body, raw))


def _votes(cmds: Sequence[Command]) -> list[Vote]:
    return [c.msg for c in cmds if isinstance(c, Publish) and isinstance(c.msg, Vote)]


def test_a_restarted_validator_that_learns_the_chain_is_ahead_syncs_before_it_votes() -> None:
    sc, blocks = _chain()
    node, keys = _validator(sc, startup_sync_ms=1_500)
    out = list(node.handle(0, Tick()))
    assert not _votes(out)  # listening first
    peer = keys[1].public
    head = blocks[5]
    status = Status(head.block.height, block_hash(head.block), head.commit)
    out += _from(node, 100, peer, status)
    assert SendTo(peer, BlockRequest(1, 16)) in out and node.catching_up
    # The startup window ends while still behind: no vote at the stale height.
    out += node.handle(1_500, TimerFired(TIMER_NEXT_HEIGHT))
    assert not _votes(out) and node.height == 1
    out += _from(node, 1_600, peer, BlockResponse(tuple(blocks[:6])))
    for t in range(6):
        out += node.handle(1_600 + t, TimerFired(TIMER_NEXT_HEIGHT))
    assert node.height == 7 and not node.catching_up
    # Caught up: now it takes part (round 0 of height 7 starts, a propose timer is set).
    assert node._height_started


def test_a_status_claiming_a_far_height_without_a_valid_certificate_changes_nothing() -> None:
    sc, blocks = _chain()
    node, _ = _validator(sc)
    node.handle(0, Tick())
    head = blocks[5]
    h = block_hash(head.block)
    liar = Keypair.derive("liar")
    forged = dataclasses.replace(head.commit, sigs=tuple(
        CommitSig(s.validator, b"\x01" * 64) for s in head.commit.sigs))
    strangers = dataclasses.replace(head.commit, sigs=(CommitSig(liar.public, b"\x02" * 64),))
    for i, st in enumerate([
        Status(10**9, h, None),  # no certificate at all
        Status(head.block.height, h, forged),  # member keys, bad signatures
        Status(head.block.height, h, strangers),  # signed by no validator of ours
        Status(head.block.height + 1, h, head.commit),  # certificate of another height
    ]):
        out = _from(node, 10_000 * (i + 1), liar.public, st)
        assert not [c for c in out if isinstance(c, SendTo)], st
        assert not node.catching_up


def test_a_status_signed_by_a_third_of_the_validators_is_enough_to_sync_from() -> None:
    sc, blocks = _chain()
    node, keys = _validator(sc)
    node.handle(0, Tick())
    head = blocks[5]
    # 2 of 4 equal validators: more than 1/3 of the power, at least one honest signer.
    two = dataclasses.replace(head.commit, sigs=head.commit.sigs[:2])
    one = dataclasses.replace(head.commit, sigs=head.commit.sigs[:1])
    peer = keys[2].public
    out = _from(node, 100, peer, Status(6, block_hash(head.block), one))
    assert not [c for c in out if isinstance(c, SendTo)]
    out = _from(node, 10_000, peer, Status(6, block_hash(head.block), two))
    assert SendTo(peer, BlockRequest(1, 16)) in out


def test_a_peer_that_serves_a_lagging_node_tells_it_how_far_to_sync() -> None:
    sc, blocks = _chain()
    server, keys = _validator(sc, index=1)
    server.handle(0, Tick())
    _from(server, 10, keys[0].public, BlockResponse(tuple(blocks[:6])))
    out = _from(server, 1_000, keys[3].public, BlockRequest(1, 2))
    sent = [c.msg for c in out if isinstance(c, SendTo) and c.peer == keys[3].public]
    assert isinstance(sent[0], BlockResponse) and len(sent[0].blocks) == 2
    assert isinstance(sent[1], Status) and sent[1].height == server.height - 1 and sent[1].commit is not None


# --- the far-round skip -----------------------------------------------------------------------


def _signed(key: Keypair, vote: Vote) -> tuple[Vote, bytes]:
    sv = sign_vote(CHAIN, vote, key.sign)
    return vote, _envelope_like(sv)


def _envelope_like(sv: SignedVote) -> bytes:
    """The core reads a vote's signature from the envelope's last 64 bytes."""
    return b"\x00" * 8 + b"\xc4\x40" + sv.signature


def test_validators_many_rounds_ahead_pull_a_restarted_node_to_their_round() -> None:
    sc, _ = _chain()
    node, keys = _validator(sc)
    node.handle(0, Tick())
    far = 30
    vote, raw = _signed(keys[1], Vote(1, far, VoteType.PREVOTE, None, keys[1].public))
    _from(node, 10, keys[1].public, vote, raw)
    assert node.machine.round == 0  # one validator of four is not more than 1/3
    vote, raw = _signed(keys[2], Vote(1, far - 2, VoteType.PRECOMMIT, None, keys[2].public))
    _from(node, 20, keys[2].public, vote, raw)
    # Two of four are: the node starts the highest round both reached (one is honest).
    assert node.machine.round == far - 2
    # The buffered far votes were replayed into the machine once in its window.
    assert node.machine.has_vote(SignedVote(vote, raw[-64:]))


# --- the future buffer ----------------------------------------------------------------------------


def test_future_buffer_bounds_each_sender_so_a_flood_evicts_only_its_own_messages() -> None:
    buf = FutureBuffer(per_sender=3, sender_bytes=1_000, total_bytes=2_500)
    honest, flooder = b"h" * 32, b"f" * 32
    assert buf.add(honest, (5, 0, 1, b""), "honest-prevote", b"x" * 100)
    for r in range(50):
        buf.add(flooder, (5, r, 1, b""), f"flood-{r}", b"y" * 100)
    assert not buf.add(honest, (5, 0, 1, b""), "dup", b"x" * 100)  # one message per key
    assert not buf.add(flooder, (5, 99, 0, b""), "huge", b"z" * 1_001)  # over its own cap
    got = buf.take(5)
    assert ("h" * 32).encode() in {s for s, _, _ in got}
    assert [b for s, b, _ in got if s == honest] == ["honest-prevote"]
    assert [b for s, b, _ in got if s == flooder] == ["flood-47", "flood-48", "flood-49"]
    assert len(buf) == 0 and buf.size == 0


def test_future_buffer_take_drops_lower_heights_keeps_later_ones_and_respects_the_round_cap() -> None:
    buf = FutureBuffer()
    s = b"s" * 32
    buf.add(s, (3, 0, 1, b""), "old", b"1")
    buf.add(s, (4, 0, 1, b""), "now", b"2")
    buf.add(s, (4, 20, 1, b""), "far", b"3")
    buf.add(s, (5, 0, 1, b""), "next", b"4")
    assert [b for _, b, _ in buf.take(4, max_round=8)] == ["now"]
    assert len(buf) == 2  # "far" waits for a round skip, "next" for its height
    assert [b for _, b, _ in buf.take(4)] == ["far"]


def test_a_node_buffers_only_validators_messages_within_the_height_window() -> None:
    sc, _ = _chain()
    node, keys = _validator(sc)
    node.handle(0, Tick())
    stranger = Keypair.derive("stranger")
    for sender, height in [(stranger.public, 2), (keys[1].public, 2 + 10)]:
        v = Vote(height, 0, VoteType.PREVOTE, None, sender)
        _from(node, 10, sender, v, b"\x00" * 74)
    assert len(node._future) == 0
    v = Vote(2, 0, VoteType.PREVOTE, None, keys[1].public)
    _from(node, 20, keys[1].public, v, b"\x00" * 74)
    assert len(node._future) == 1


# --- starting from a snapshot ------------------------------------------------------------------


class SnapshotApp(HashChainApp):
    """The toy application with the snapshot the core asks for (its root is its state)."""

    def snapshot(self) -> bytes:
        return self._root

    @classmethod
    def restored(cls, validators: Sequence[Validator], state: bytes) -> SnapshotApp:
        app = cls(validators)
        app._root = state
        return app


class GrowingApp(SnapshotApp):
    """Adds validators at epochs, so priorities and power history differ per height."""

    def __init__(self, validators: Sequence[Validator]) -> None:
        super().__init__(validators)
        self.extra = [Validator(Keypair.derive(f"grow/{i}").public, 1) for i in range(3)]

    def finalize_block(self, block: BlockContext) -> BlockOutcome:
        out = super().finalize_block(block)
        n = min(block.height // 4, len(self.extra))
        return BlockOutcome(out.app_hash, (*self._validators, *self.extra[:n]))


def _solo_chain(heights: int) -> tuple[ConsensusConfig, Keypair, dict[str, dict[bytes, bytes]]]:
    key = Keypair.derive("snap-solo")
    vals = (Validator(key.public, 10),)
    cfg = ConsensusConfig(chain_id="snap", genesis_validators=vals, epoch_length=4, block_interval_ms=1,
                          snapshot_every=4)
    node = ConsensusNode(cfg, GrowingApp(vals), key)
    disk: dict[str, dict[bytes, bytes]] = {}
    timers: dict[str, int] = {}
    cmds, now = node.handle(0, Tick()), 0
    for _ in range(100_000):
        for c in cmds:
            if isinstance(c, Persist):
                disk.setdefault(c.kind, {})[c.key] = c.value
            elif isinstance(c, SetTimer):
                timers[c.key] = c.at
        if node.height > heights:
            return cfg, key, disk
        # The extra validators have no node: their rounds time out, as on a real network.
        timer, at = min(timers.items(), key=lambda kv: kv[1])
        del timers[timer]
        now = max(now, at)
        cmds = node.handle(now, TimerFired(timer))
    raise AssertionError(f"solo chain stuck at height {node.height}")


def _restore(cfg: ConsensusConfig, key: Keypair, disk: dict[str, dict[bytes, bytes]], snap_key: bytes | None,
             ) -> ConsensusNode:
    vals = cfg.genesis_validators
    blocks = sorted(disk[PERSIST_BLOCK].items())
    if snap_key is None:
        node = ConsensusNode(cfg, GrowingApp(vals), key)
        node.restore([v for _, v in blocks], None)
        return node
    cp, state = decode_snapshot(disk[PERSIST_SNAPSHOT][snap_key])
    app = GrowingApp(vals)
    app._root = state
    node = ConsensusNode(cfg, app, key)
    node.restore([v for k, v in blocks if k > snap_key[:8]], None, cp)
    return node


def test_a_node_started_from_a_snapshot_is_in_the_state_of_one_that_replayed_everything() -> None:
    cfg, key, disk = _solo_chain(14)
    snaps = sorted(disk[PERSIST_SNAPSHOT])
    assert [int.from_bytes(k[:8], "big") for k in snaps] == [4, 8, 12]
    full = _restore(cfg, key, disk, None)
    for snap_key in snaps:
        node = _restore(cfg, key, disk, snap_key)
        assert (node.height, node.last_hash, node.app_hash) == (full.height, full.last_hash, full.app_hash)
        assert node.vset == full.vset and node.prev_vset == full.prev_vset
        horizon = range(node.height - cfg.max_evidence_age, node.height + 1)
        assert {h: node._powers_of(h) for h in horizon} == {h: full._powers_of(h) for h in horizon}
        assert node.vset.proposer(0) == full.vset.proposer(0)


def test_a_snapshot_whose_state_or_next_block_does_not_fit_is_refused() -> None:
    cfg, key, disk = _solo_chain(10)
    snap_key = sorted(disk[PERSIST_SNAPSHOT])[-1]
    cp, state = decode_snapshot(disk[PERSIST_SNAPSHOT][snap_key])
    vals = cfg.genesis_validators
    blocks = [v for k, v in sorted(disk[PERSIST_BLOCK].items()) if k > snap_key[:8]]
    # Another application state than the snapshot names.
    with pytest.raises(BadSnapshot):
        ConsensusNode(cfg, SnapshotApp(vals), key).restore(blocks, None, cp)
    # A checkpoint whose validator set is not the one that certified the next block.
    stranger = Keypair.derive("not-a-validator")
    wrong = dataclasses.replace(cp, vset=tuple(
        dataclasses.replace(m, pubkey=stranger.public) for m in cp.vset[:1]) + cp.vset[1:])
    app = GrowingApp(vals)
    app._root = state
    with pytest.raises((BadSnapshot, ValidationError)):
        ConsensusNode(cfg, app, key).restore(blocks, None, wrong)
    # Truncated or foreign bytes.
    raw = encode_snapshot(cp, state)
    for bad in (raw[:10], b"\x09" + raw[1:], raw[:1] + (10**8).to_bytes(4, "big") + raw[5:]):
        with pytest.raises(BadSnapshot):
            decode_snapshot(bad)


def test_only_heights_that_are_multiples_of_snapshot_every_persist_a_snapshot() -> None:
    _, _, disk = _solo_chain(9)
    heights = sorted(int.from_bytes(k[:8], "big") for k in disk[PERSIST_SNAPSHOT])
    assert heights == [4, 8]
    for k, v in disk[PERSIST_SNAPSHOT].items():
        cp, _ = decode_snapshot(v)
        assert cp.height == int.from_bytes(k[:8], "big") and k[8:] == cp.app_hash


def test_the_first_block_after_a_far_ahead_proposal_hint_is_requested_from_its_sender() -> None:
    sc, blocks = _chain()
    node, keys = _validator(sc)
    node.handle(0, Tick())
    prop = Proposal(5, 0, -1, blocks[4].block)
    out = _from(node, 10, keys[1].public, prop)
    assert SendTo(keys[1].public, BlockRequest(1, 16)) in out
    assert not node.catching_up  # a hint is not proof: the node still votes
