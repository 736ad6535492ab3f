"""The consensus node core: block sync with certificate checks, restart from disk,
epoch-bounded validator changes, bounded mempool, hostile input."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsim import Crash, Restart, Sim
from netsim.scenarios.consensus import ConsensusScenario, HashChainApp, Observations, run_scenario
from protocol.app import BlockContext, BlockOutcome, Validator
from protocol.commands import (
    TOPIC_CONSENSUS,
    MessageReceived,
    Persist,
    Publish,
    SendTo,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.consensus.block import block_hash
from protocol.consensus.mempool import Mempool, MempoolFull
from protocol.consensus.messages import BlockRequest, BlockResponse, CommittedBlock, Proposal, Status
from protocol.consensus.node import (
    PERSIST_BLOCK,
    TIMER_NEXT_HEIGHT,
    ConsensusConfig,
    ConsensusNode,
)
from protocol.consensus.signer import VoteSigner
from protocol.consensus.votes import Vote, VoteType
from protocol.identity import Keypair
from protocol.records import decode_record

DIRECT = "polnet/direct/1"


def _chain(heights: int = 6) -> tuple[ConsensusScenario, list[CommittedBlock]]:
    sc = ConsensusScenario(seed=4, duration_ms=800)
    sims: list[Sim] = []
    run_scenario(sc, setup=sims.append)
    blocks = [decode_record(CommittedBlock, v) for _, v in sims[0].disk(0).items(PERSIST_BLOCK)]
    assert len(blocks) >= heights
    return sc, blocks


def _observer(sc: ConsensusScenario, app: HashChainApp | None = None) -> ConsensusNode:
    from netsim.scenarios.consensus import genesis_validators

    vals = genesis_validators(sc)
    cfg = ConsensusConfig(chain_id=sc.sim_config().chain_id, genesis_validators=vals)
    node = ConsensusNode(cfg, app or HashChainApp(vals), key=None)
    node.handle(0, Tick())
    return node


def _deliver(node: ConsensusNode, body: object, raw: bytes = b"") -> list[object]:
    return list(node.handle(10, MessageReceived(DIRECT, b"\x07" * 32, body, raw)))


def test_block_sync_applies_blocks_whose_certificates_verify() -> None:
    sc, blocks = _chain()
    node = _observer(sc)
    _deliver(node, BlockResponse(tuple(blocks[:5])))
    assert node.height == 6
    assert node.last_hash == block_hash(blocks[4].block)
    assert node.app_hash == blocks[5].block.header.app_hash  # same state root as the validators


@pytest.mark.parametrize(
    "tamper",
    [
        lambda cb: dataclasses.replace(cb, commit=dataclasses.replace(cb.commit, sigs=cb.commit.sigs[:2])),
        lambda cb: dataclasses.replace(cb, commit=dataclasses.replace(cb.commit, block_hash=b"\x05" * 32)),
        lambda cb: dataclasses.replace(
            cb, block=dataclasses.replace(cb.block, txs=(b"injected",))
        ),  # body no longer matches the header the certificate signed
        lambda cb: dataclasses.replace(
            cb,
            commit=dataclasses.replace(
                cb.commit,
                sigs=tuple(dataclasses.replace(s, signature=b"\x01" * 64) for s in cb.commit.sigs),
            ),
        ),
    ],
)
def test_block_sync_refuses_a_block_without_a_valid_certificate(tamper: object) -> None:
    sc, blocks = _chain()
    node = _observer(sc)
    _deliver(node, BlockResponse((blocks[0], tamper(blocks[1]), blocks[2])))  # type: ignore[operator]
    assert node.height == 2  # block 1 applied; the forged block 2 (and what follows) not


def test_a_node_restarted_from_disk_loses_no_committed_block_and_rejoins() -> None:
    sc = ConsensusScenario(
        seed=9,
        duration_ms=2_500,
        liveness_ms=1_500,
        faults=(Crash(at=700, node=2, lose_unsynced=True), Restart(at=1_500, node=2)),
    )
    obs = Observations()
    before: dict[int, bytes] = {}
    sims: list[Sim] = []

    def at_crash(sim: Sim) -> None:
        before.update({h: by[2] for h, by in obs.commits.items() if 2 in by})

    def setup(sim: Sim) -> None:
        sims.append(sim)
        sim.call_at(701, at_crash)

    run_scenario(sc, setup=setup, obs=obs)
    on_disk = {cb.block.height: block_hash(cb.block) for cb in _disk_blocks(sims[0], 2)}
    # Every block node 2 committed before the crash is still on its disk (the block is
    # persisted in the same step that commits it, before anything acts on it).
    assert before and all(on_disk.get(h) == hh for h, hh in before.items())
    tops = [obs.height_of(i) for i in range(sc.n)]
    assert tops[2] >= max(tops) - 1 > max(before)


def _disk_blocks(sim: Sim, node: int) -> list[CommittedBlock]:
    return [decode_record(CommittedBlock, v) for _, v in sim.disk(node).items(PERSIST_BLOCK)]


def test_commit_persists_the_block_before_any_message_of_the_next_height() -> None:
    key = Keypair.derive("solo")
    vals = (Validator(key.public, 1),)
    node = ConsensusNode(
        ConsensusConfig(chain_id="solo", genesis_validators=vals, block_interval_ms=10),
        HashChainApp(vals),
        key,
    )
    cmds = list(node.handle(0, Tick()))  # one validator: proposes, votes, decides at once
    persisted = [i for i, c in enumerate(cmds) if isinstance(c, Persist) and c.kind == PERSIST_BLOCK]
    assert persisted and node.height == 2
    assert not [c for c in cmds[persisted[0] :] if isinstance(c, Publish)]
    assert SetTimer(10, TIMER_NEXT_HEIGHT) in cmds  # the next height waits for the shell
    for t in range(1, 6):
        node.handle(t * 10, TimerFired(TIMER_NEXT_HEIGHT))
    assert node.height == 7


class EpochApp(HashChainApp):
    """Adds a fifth validator to the set it reports after height 1."""

    def __init__(self, validators: Sequence[Validator], extra: Validator) -> None:
        super().__init__(validators)
        self.extra = extra

    def finalize_block(self, block: BlockContext) -> BlockOutcome:
        out = super().finalize_block(block)
        return BlockOutcome(out.app_hash, (*out.validators, self.extra))


def test_the_validator_set_changes_only_at_epoch_boundaries() -> None:
    key = Keypair.derive("epoch-solo")
    extra = Validator(Keypair.derive("epoch-extra").public, 1)
    vals = (Validator(key.public, 10),)
    cfg = ConsensusConfig(chain_id="e", genesis_validators=vals, epoch_length=3, block_interval_ms=1)
    node = ConsensusNode(cfg, EpochApp(vals, extra), key)
    node.handle(0, Tick())
    sizes = [len(node.vset.validators)]
    for t in range(1, 5):
        node.handle(t, TimerFired(TIMER_NEXT_HEIGHT))
        sizes.append(len(node.vset.validators))
    # Heights 1, 2 keep the genesis set; after height 3 (an epoch boundary) it has two.
    assert sizes[:2] == [1, 1] and sizes[2:] == [2, 2, 2]


def test_mempool_is_bounded_by_count_and_bytes_and_deduplicates() -> None:
    pool = Mempool(max_txs=2, max_bytes=100)
    assert pool.add(b"a" * 10) and not pool.add(b"a" * 10)
    pool.add(b"b" * 10)
    with pytest.raises(MempoolFull):
        pool.add(b"c")
    pool.remove([b"a" * 10])
    with pytest.raises(MempoolFull):
        pool.add(b"d" * 95)
    assert pool.candidates(5) == [b"b" * 10]


def test_hostile_consensus_messages_never_crash_the_node() -> None:
    sc, blocks = _chain()
    node = _observer(sc)
    junk: list[object] = [
        Vote(1, 0, VoteType.PREVOTE, None, b"\x01" * 32),  # raw is not an envelope
        Proposal(1, 0, 5, blocks[0].block),  # valid_round not below the round
        Proposal(2**63, 2**31, -1, blocks[0].block),
        Status(2**63, b"\x00" * 32),
        BlockResponse((blocks[3],)),  # not the next height: ignored
        "not a record",
    ]
    for body in junk:
        _deliver(node, body, raw=b"\x93\x01\x02")
    node.handle(20, TimerFired("tm/9/9/9"))
    node.handle(20, TimerFired("tm/x"))
    assert node.height == 1
    # Garbage on the consensus topic is handled the same way.
    node.handle(30, MessageReceived(TOPIC_CONSENSUS, b"\x02" * 32, Vote(1, 0, 1, None, b"\x02" * 32), b""))  # type: ignore[arg-type]
    assert node.height == 1


def test_block_sync_answers_are_rate_limited_per_peer() -> None:
    sc, blocks = _chain()
    node = _observer(sc)
    _deliver(node, BlockResponse(tuple(blocks[:5])))
    peer = b"\x07" * 32

    def ask(now: int) -> int:
        cmds = node.handle(now, MessageReceived(DIRECT, peer, BlockRequest(1, 16), b""))
        return sum(isinstance(c, SendTo) and isinstance(c.msg, BlockResponse) for c in cmds)

    assert ask(1_000) == 1
    assert [ask(1_000 + i) for i in range(1, 50)] == [0] * 49
    assert ask(1_000 + node.cfg.serve_interval_ms) == 1


def test_the_signer_never_signs_two_different_votes_for_one_position_even_after_restart() -> None:
    key = Keypair.derive("signer")
    signer = VoteSigner("c", key)
    a = Vote(3, 1, VoteType.PREVOTE, b"\x01" * 32, key.public)
    b = dataclasses.replace(a, block_hash=None)
    first = signer.sign(a)
    assert first is not None and signer.sign(a) == first and signer.sign(b) is None
    again = VoteSigner("c", key)
    again.load(signer.dump(), height=3)
    assert again.sign(b) is None and again.sign(a) == first
    stale = VoteSigner("c", key)
    stale.load(signer.dump(), height=4)  # votes of an older height are dropped
    assert stale.votes() == []


_hashes = st.one_of(st.none(), st.binary(min_size=32, max_size=32))
_FUZZ_KEYS = [Keypair.derive("fuzzed").public, Keypair.derive("fuzzed/2").public]
_votes = st.builds(
    Vote,
    st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)),
    st.one_of(st.integers(0, 10), st.integers(0, 2**32 - 1)),
    st.sampled_from(VoteType),
    _hashes,
    st.one_of(st.sampled_from(_FUZZ_KEYS), st.binary(min_size=32, max_size=32)),
)
_others = st.one_of(
    st.builds(Status, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32)),
    st.builds(BlockRequest, st.integers(0, 2**64 - 1), st.integers(0, 2**16 - 1)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.one_of(_votes, _others), st.binary(max_size=80)), max_size=20))
def test_arbitrary_well_typed_messages_never_crash_the_node_or_move_it_backwards(
    msgs: list[tuple[object, bytes]],
) -> None:
    node = _fresh_validator()
    for i, (body, raw) in enumerate(msgs):
        sender = body.validator if isinstance(body, Vote) else b"\x07" * 32
        node.handle(100 + i, MessageReceived(TOPIC_CONSENSUS, sender, body, raw))
    assert node.height >= 1


def _fresh_validator() -> ConsensusNode:
    key = Keypair.derive("fuzzed")
    vals = tuple(Validator(k, 1) for k in _FUZZ_KEYS)
    node = ConsensusNode(ConsensusConfig(chain_id="f", genesis_validators=vals), HashChainApp(vals), key)
    node.handle(0, Tick())
    return node


def _pair() -> tuple[ConsensusNode, Keypair, tuple[Validator, ...]]:
    me, other = Keypair.derive("pair/me"), Keypair.derive("pair/other")
    vals = (Validator(me.public, 1), Validator(other.public, 1))
    node = ConsensusNode(ConsensusConfig(chain_id="p", genesis_validators=vals), HashChainApp(vals), me)
    return node, me, vals


def test_a_restarted_validator_keeps_the_lock_its_precommit_implies() -> None:
    node, me, _ = _pair()
    signer = VoteSigner("p", me)
    locked = b"\x0a" * 32
    signer.sign(Vote(1, 2, VoteType.PRECOMMIT, locked, me.public))
    signer.sign(Vote(1, 3, VoteType.PRECOMMIT, None, me.public))
    node.restore([], signer.dump())
    assert (node.machine.locked_round, node.machine.locked_hash) == (2, locked)


def test_a_live_block_from_a_clock_far_ahead_is_not_valid() -> None:
    node, me, _ = _pair()
    node.handle(1_000, Tick())
    block = node._get_value(next(r for r in range(2) if node.machine.inp.proposer(r) == me.public))
    assert node._valid(block)
    ahead = dataclasses.replace(
        block, header=dataclasses.replace(block.header, time=1_000 + node.cfg.max_clock_drift_ms + 1)
    )
    assert not node._valid(ahead)


def test_a_vote_for_an_absurd_round_is_dropped_before_any_round_work() -> None:
    # Regression (hypothesis): votes for round 2**32 - 1 from validators with > 1/3 of the
    # power made the node walk the proposer schedule to that round, stalling it.
    from protocol.consensus.limits import MAX_ROUND

    node = _fresh_validator()
    for key in _FUZZ_KEYS:
        vote = Vote(1, 2**32 - 1, VoteType.PREVOTE, None, key)
        out = node.handle(100, MessageReceived(TOPIC_CONSENSUS, key, vote, b""))
        assert all(getattr(c, "event", "") != "consensus.round_skip" for c in out)
    assert node.machine.round <= MAX_ROUND and node.height >= 1
