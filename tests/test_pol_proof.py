"""Merkle proofs, segment sampling, thresholds, and the pinpoint game on the synthetic trainer."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ValidationError
from protocol.pol.arena import play
from protocol.pol.jobs import VerifyJob
from protocol.pol.merkle import CheckpointLeaf, inclusion_proof, leaf_hash, merkle_root, verify_inclusion
from protocol.pol.messages import DisputeOpen, PinpointClaim
from protocol.pol.ops import state_slots_per_param, step_ops
from protocol.pol.oracle import HonestOracle, state_hash_of
from protocol.pol.pinpoint import Outcome, Phase, Side, open_dispute, process_claim
from protocol.pol.sampling import (
    choose_segments,
    escape_probability,
    sample_count,
    segment_passes,
    threshold_from_profile,
)
from protocol.pol.spec import LossKind, OptimizerKind, OptimizerSpec, ReproProfile, TaskSpec, linear, relu
from protocol.pol.synthetic import Cheat, SyntheticRun, referee, verify_segment

SPEC = TaskSpec(
    1,
    (8,),
    3,
    (linear(8, 4), relu(), linear(4, 3)),
    LossKind.CROSS_ENTROPY,
    OptimizerSpec(OptimizerKind.ADAM, 0.01),
    4,
    64,
    16,
    b"\x01" * 32,
    64,
    1,
    2,
    3,
    ReproProfile(),
)


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(CheckpointLeaf(i, bytes([i % 256]) * 32, b"\x02" * 32, 7)) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_every_leaf_has_a_proof_that_verifies_and_only_for_its_own_position(
    n: int, data: st.DataObject
) -> None:
    hs = leaves(n)
    root = merkle_root(hs)
    i = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(hs, i)
    assert verify_inclusion(root, hs[i], proof)
    assert len(proof.path) <= max(1, (n - 1).bit_length())
    if n > 1:
        j = (i + 1) % n
        assert not verify_inclusion(root, hs[j], proof)
        assert not verify_inclusion(root, hs[i], replace(proof, index=j))


def test_a_tampered_leaf_changes_the_root() -> None:
    hs = leaves(9)
    bad = [*hs[:4], leaf_hash(CheckpointLeaf(4, b"\x09" * 32, b"\x02" * 32, 7)), *hs[5:]]
    assert merkle_root(hs) != merkle_root(bad)


def test_sampling_always_includes_the_last_segment_and_is_seed_deterministic() -> None:
    picks = {choose_segments(bytes([s]) * 32, 64, sample_count(64)) for s in range(50)}
    assert all(63 in p and len(p) == 2 for p in picks)
    assert len(picks) > 10  # the random part really varies with the seed
    assert choose_segments(b"a" * 32, 64, 5) == choose_segments(b"a" * 32, 64, 5)


def test_escape_probability_matches_counting() -> None:
    assert escape_probability(64, 2, 0) == 1.0
    assert escape_probability(64, 2, 1) == pytest.approx(62 / 63)
    assert escape_probability(10, 10, 1) == 0.0


def test_threshold_is_zero_when_bit_reproducible_and_refuses_inseparable_profiles() -> None:
    assert threshold_from_profile([0.0, 0.0], [0.5]) == 0.0
    assert threshold_from_profile([1e-6], [0.5]) == pytest.approx(1e-5)
    with pytest.raises(ValidationError):
        threshold_from_profile([1e-2], [0.5])
    assert segment_passes(0.0, 1.0, 0.0) and not segment_passes(1e-9, 1.0, 0.0)
    assert not segment_passes(float("nan"), 1.0, 0.1)


def dispute(defender: SyntheticRun, challenger: SyntheticRun, seg: int) -> DisputeOpen:
    k = SPEC.checkpoint_interval
    return DisputeOpen(
        b"d" * 32,
        b"t" * 32,
        seg,
        seg * k,
        k,
        state_hash_of(defender.state_digests(seg * k)),
        state_hash_of(defender.state_digests((seg + 1) * k)),
        state_hash_of(challenger.state_digests((seg + 1) * k)),
        b"A" * 32,
        b"B" * 32,
    )


class Silent:
    def claim(self, job: object) -> None:
        return None

    def reveal(self, job: object) -> None:
        return None


@settings(max_examples=30, deadline=None)
@given(first_bad=st.integers(0, 63))
def test_pinpoint_catches_a_cheat_at_any_step_within_the_round_bound(first_bad: int) -> None:
    honest, cheat = SyntheticRun(SPEC), SyntheticRun(SPEC, Cheat(skip_from=first_bad))
    seg = first_bad // SPEC.checkpoint_interval
    rep = play(SPEC, dispute(cheat, honest, seg), 0.0, HonestOracle(cheat), HonestOracle(honest), referee)
    assert rep.outcome is Outcome.CHALLENGER_WINS
    assert rep.step == first_bad and rep.rounds <= rep.bound
    # roles swapped: an honest defender against a lying challenger wins
    rep2 = play(SPEC, dispute(honest, cheat, seg), 0.0, HonestOracle(honest), HonestOracle(cheat), referee)
    assert rep2.outcome is Outcome.DEFENDER_WINS and rep2.rounds <= rep2.bound


def test_silence_loses_at_the_deadline() -> None:
    honest, cheat = SyntheticRun(SPEC), SyntheticRun(SPEC, Cheat(corrupt_at=64))
    d = dispute(cheat, honest, 3)
    assert play(SPEC, d, 0.0, Silent(), HonestOracle(honest), referee).outcome is Outcome.CHALLENGER_WINS
    assert play(SPEC, d, 0.0, HonestOracle(cheat), Silent(), referee).outcome is Outcome.DEFENDER_WINS
    assert play(SPEC, d, 0.0, Silent(), Silent(), referee).outcome is Outcome.BOTH_WRONG


def test_equivocation_loses_immediately() -> None:
    honest, cheat = SyntheticRun(SPEC), SyntheticRun(SPEC, Cheat(data_seed=99))
    n = len(SPEC.layers)
    d = open_dispute(dispute(cheat, honest, 0), step_ops(SPEC), 4, 4 * state_slots_per_param(SPEC), 0)
    claim = PinpointClaim(b"d" * 32, int(Phase.STEP), d.round, d.query_index, b"\x01" * 32)
    process_claim(d, Side.DEFENDER, claim, 1)
    process_claim(d, Side.DEFENDER, replace(claim, value=b"\x02" * 32), 2)
    assert d.outcome is Outcome.CHALLENGER_WINS and "equivocated" in d.reason and n == 3


def test_claims_for_a_stale_query_or_after_the_deadline_are_refused() -> None:
    honest, cheat = SyntheticRun(SPEC), SyntheticRun(SPEC, Cheat(data_seed=99))
    d = open_dispute(dispute(cheat, honest, 0), step_ops(SPEC), 4, 8, 0)
    with pytest.raises(ValidationError):
        process_claim(
            d, Side.DEFENDER, PinpointClaim(b"d" * 32, 1, d.round + 1, d.query_index, b"\x01" * 32), 1
        )
    with pytest.raises(ValidationError):
        process_claim(
            d,
            Side.DEFENDER,
            PinpointClaim(b"d" * 32, 1, d.round, d.query_index, b"\x01" * 32),
            d.deadline + 1,
        )


def test_disputes_without_disagreement_are_refused() -> None:
    honest = SyntheticRun(SPEC)
    with pytest.raises(ValidationError):
        open_dispute(dispute(honest, honest, 0), step_ops(SPEC), 4, 8, 0)


def test_synthetic_verification_passes_honest_and_fails_cheats() -> None:
    honest, cheat = SyntheticRun(SPEC), SyntheticRun(SPEC, Cheat(corrupt_at=64))
    for run, ok in ((honest, True), (cheat, False)):
        job = VerifyJob(b"t" * 32, SPEC, 3, run.leaf(48), run.leaf(64), 0.0)
        assert verify_segment(job, run.state_digests(48)).passed is ok
