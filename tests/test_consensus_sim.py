"""Consensus under netsim: safety with Byzantine stake below 1/3 over many seeds, the
negative control above it, evidence committed exactly once, liveness after faults heal."""

from __future__ import annotations

import pytest

from netsim import (
    Check,
    Crash,
    Heal,
    InvariantViolation,
    NemesisConfig,
    NetworkConfig,
    Partition,
    Restart,
    Sim,
)
from netsim.scenarios.consensus import (
    ConsensusScenario,
    Observations,
    genesis_validators,
    honest_nodes,
    run_scenario,
    seeded_byzantine,
)
from protocol.consensus.evidence import DuplicateVoteEvidence
from protocol.consensus.messages import CommittedBlock
from protocol.consensus.node import PERSIST_BLOCK
from protocol.encoding import canonical_hash
from protocol.records import decode_record

SWEEP_SEEDS = 200
#: Liveness bound: after the liveness phase starts (all faults healed, crashed nodes
#: restarted), every honest node commits a new block within this much virtual time.
#: Timeouts are at most 3 s here and the rounds lost to the partition are re-synchronised by
#: round skip, so a few rounds plus block sync fit comfortably.
LIVENESS_BOUND_MS = 8_000


def _sweep_scenario(seed: int) -> ConsensusScenario:
    """4 or 5 equal validators, one Byzantine (silent, equivocating or splitting), a lossy,
    reordering network whose loss and jitter vary with the seed; every third seed also
    runs the nemesis (partitions, isolation, clogging, loss bursts, pauses and crashes of
    the honest nodes, at most one node at a time) during the run."""
    n = 4 + seed % 2
    sc = seeded_byzantine(seed, n)
    net = NetworkConfig(latency_ms=20, jitter_ms=10 + seed % 40, loss=(seed % 5) * 0.02)
    nemesis = None
    if seed % 3 == 0:
        honest = tuple(i for i in range(n) if sc.behaviour(i) == "honest")
        nemesis = NemesisConfig(
            mean_gap_ms=150,
            min_fault_ms=50,
            max_fault_ms=300,
            max_faulty=1,
            targets=honest,
            lose_unsynced=0.0,
        )
    return ConsensusScenario(
        seed=seed, powers=sc.powers, behaviours=sc.behaviours, duration_ms=1200, network=net, nemesis=nemesis
    )


@pytest.mark.parametrize("chunk", range(4))
def test_no_two_honest_nodes_commit_different_blocks_with_byzantine_stake_below_one_third(chunk: int) -> None:
    per_chunk = SWEEP_SEEDS // 4
    committed_somewhere = 0
    for seed in range(chunk * per_chunk, (chunk + 1) * per_chunk):
        sc = _sweep_scenario(seed)
        assert sc.byzantine_power_fraction() < 1 / 3
        _, obs = run_scenario(sc)  # the no_fork checker raises InvariantViolation on a fork
        committed_somewhere += max(obs.height_of(i) for i in honest_nodes(sc)) > 0
    # The sweep is not vacuous: nearly every seed commits blocks despite the faults.
    assert committed_somewhere >= per_chunk * 0.8


@pytest.mark.slow
def test_safety_sweep_with_larger_committees_and_two_byzantine_validators() -> None:
    for seed in range(300):
        kinds = ("silent", "equivocate", "split")
        behaviours = tuple(
            kinds[(seed + i) % 3] if i in (seed % 7, (seed + 3) % 7) else "honest" for i in range(7)
        )
        net = NetworkConfig(latency_ms=20, jitter_ms=30, loss=(seed % 4) * 0.03)
        sc = ConsensusScenario(
            seed=seed, powers=(1,) * 7, behaviours=behaviours, duration_ms=1500, network=net
        )
        assert sc.byzantine_power_fraction() < 1 / 3
        run_scenario(sc)


def test_checker_detects_a_fork_when_byzantine_stake_reaches_one_third() -> None:
    """Negative control: two of four validators (1/2 of the stake) running the split attack
    fork the honest nodes in some seed, so the sweep above could have failed."""
    forks = 0
    for seed in range(20):
        sc = ConsensusScenario(seed=seed, behaviours=("split", "split"), duration_ms=800)
        assert sc.byzantine_power_fraction() >= 1 / 3
        try:
            run_scenario(sc)
        except InvariantViolation as exc:
            assert "different blocks" in str(exc) and f"--seed {seed}" in str(exc)
            forks += 1
    assert forks > 0


def test_split_attack_by_exactly_one_third_of_stake_does_not_fork() -> None:
    for seed in range(10):
        sc = ConsensusScenario(seed=seed, powers=(1, 1, 1), behaviours=("split",), duration_ms=800)
        run_scenario(sc)


def test_every_injected_equivocation_is_committed_as_evidence_exactly_once() -> None:
    for seed in range(6):
        sc = ConsensusScenario(
            seed=seed, behaviours=("honest",) * (seed % 4) + ("equivocate",), duration_ms=1500
        )
        _, obs = run_scenario(sc)
        _assert_evidence_committed_once(sc, obs)


def _assert_evidence_committed_once(sc: ConsensusScenario, obs: Observations) -> None:
    honest = honest_nodes(sc)
    top = min(obs.height_of(i) for i in honest)
    assert top >= 5
    # Equivocations made at least two heights before the end have had a proposer since.
    settled = {pos for pos in obs.injected if pos[1] + 2 < top}
    assert settled, "the equivocator never voted"
    for node in honest:
        counts = obs.committed_evidence.get(node, {})
        assert all(c == 1 for c in counts.values()), "some evidence was committed twice"
        for validator, height, round_, step in settled:
            eid = canonical_hash([b"polnet/equivocation/v1", validator, height, round_, step])
            assert counts.get(eid) == 1, f"equivocation at height {height} round {round_} not committed"


def test_honest_nodes_commit_again_within_the_bound_after_partition_heals_and_crashed_node_returns() -> None:
    faults = (
        Partition(at=300, groups=((0, 1), (2, 3))),  # no side has a quorum
        Crash(at=600, node=3, lose_unsynced=True),
        Heal(at=1500),
        Restart(at=2500, node=3),
        Partition(at=3000, groups=((0,), (1, 2, 3))),  # the majority side keeps committing
    )
    sc = ConsensusScenario(seed=3, duration_ms=4_000, liveness_ms=LIVENESS_BOUND_MS, faults=faults)
    obs = Observations()
    at_heal: dict[int, int] = {}

    def snapshot(sim: Sim) -> None:
        at_heal.update({i: obs.height_of(i) for i in range(sc.n)})

    def progressed(sim: Sim) -> None:
        for i in range(sc.n):
            new = [h for h, by in obs.commits.items() if i in by and h > max(at_heal.values())]
            assert new, f"node {i} committed nothing new within {LIVENESS_BOUND_MS} ms of the heal"
        tops = {obs.height_of(i) for i in range(sc.n)}
        assert max(tops) - min(tops) <= 1

    run_scenario(
        sc, [Check(progressed, final=True)], setup=lambda sim: sim.call_at(sc.duration_ms, snapshot), obs=obs
    )
    # The minority node 0 fell behind during the last partition and caught up by block sync.
    assert at_heal[0] < max(at_heal.values())
    final = max(obs.height_of(i) for i in range(sc.n))
    roots = {obs.app_hashes[final - 1][i] for i in range(sc.n) if i in obs.app_hashes.get(final - 1, {})}
    assert len(roots) == 1


def test_same_seed_gives_the_same_trace_and_another_seed_does_not() -> None:
    sc = ConsensusScenario(seed=11, behaviours=("equivocate",), duration_ms=600)
    a, _ = run_scenario(sc)
    b, _ = run_scenario(sc)
    c, _ = run_scenario(ConsensusScenario(seed=12, behaviours=("equivocate",), duration_ms=600))
    assert a.trace_hash == b.trace_hash != c.trace_hash


def test_split_attack_precommits_are_caught_from_the_commit_certificate() -> None:
    """The splitter precommits A to one honest node and B to the others: no honest node sees
    both votes, but the certificate that commits B carries the B precommit, which conflicts
    with the A precommit logged by the first node: it becomes evidence and is committed."""
    sc = ConsensusScenario(seed=0, behaviours=("split",), duration_ms=2_000)
    sims: list[Sim] = []
    _, obs = run_scenario(sc, setup=sims.append)
    splitter = genesis_validators(sc)[0].pubkey
    for node in honest_nodes(sc):
        assert sum(obs.committed_evidence.get(node, {}).values()) >= 2
    blocks = [decode_record(CommittedBlock, v).block for _, v in sims[0].disk(1).items(PERSIST_BLOCK)]
    evidence: list[DuplicateVoteEvidence] = [ev for b in blocks for ev in b.evidence]
    assert evidence and all(ev.validator == splitter for ev in evidence)
