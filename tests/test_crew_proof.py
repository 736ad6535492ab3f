"""Verifying a crew stage by stage (node/compute/crew/proof.py, cheats.py, crosscheck.blame).

Pins that every segment of every honest member re-executes to exactly what it committed,
even when its neighbours or replicas cheat (no false positives: an honest member is
judged only on what it received, which it holds signed); that every cheat of the crew
catalog is found at its own member and nowhere else; that a boundary liar is convicted
by the signatures its receiver keeps, towards a pipeline neighbour or towards a replica;
and that proof blobs a member serves are bounded, typed and checked before use.

Several cheaters share one crew run (each is judged on its own recorded inputs, so they
do not mask each other) to keep the suite short: three crews cover the catalog."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from node.compute import datasets
from node.compute.crew import cheats
from node.compute.crew.channels import ChannelError, SignedChannel, boundary_statement
from node.compute.crew.crosscheck import Mismatch, blame, cross_check
from node.compute.crew.launch import crew_id, local_keys, run_local_crew
from node.compute.crew.model import ModelShape
from node.compute.crew.pipeline import CrewConfig, StageResult, StageWorker, windows
from node.compute.crew.proof import (
    MAX_PROOF_BLOB,
    Commitment,
    ProofError,
    SegmentInputs,
    check_segment,
    local_fetch,
    restore,
    snapshot,
    state_digest,
    verify_crew,
)

TOKENS = datasets.corpus().tokens
#: 4 stages, one replica: 4 steps a run, a checkpoint after every step.
PIPE = CrewConfig(stages=4, shape=ModelShape(blocks=4, width=16, heads=2, context=16), micro_batch=4,
                  micro_batches=2, epochs=2, n_train=16, n_val=8, lr=3e-3, seed=5, bits=2, segment_steps=1)
#: 2 stages x 2 replicas.
DP = replace(PIPE, stages=2, shape=ModelShape(blocks=2, width=16, heads=2, context=16), data_parallel=2,
             micro_batch=2)
SEED = b"verifier beacon"


def _flagged(cfg: CrewConfig, results: list[StageResult], root: Path,
             fraction: float = 1.0) -> dict[int, str]:
    verdicts = verify_crew(cfg, TOKENS, results, local_fetch(root), SEED, fraction)
    return {f.rank: f.what for v in verdicts for f in v.findings}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(("cfg", "who"), [
    (PIPE, {0: "data_order", 1: "truncated", 3: "noisy"}),
    (PIPE, {1: "frozen", 2: "lazy_backward"}),
    (DP, {DP.rank(0, 1): "negated_gradient", DP.rank(1, 0): "skipped_steps"}),
], ids=["pipe-a", "pipe-b", "dp"])
def test_each_catalog_cheat_is_found_at_its_member_and_no_honest_member_is_flagged(
        cfg: CrewConfig, who: dict[int, str], tmp_path: Path) -> None:
    results = run_local_crew(cfg, TOKENS, deadline_s=300, cheats=who, proof_root=tmp_path)
    flagged = _flagged(cfg, results, tmp_path)
    assert set(flagged) == set(who), flagged  # every segment of every honest member re-executed
    assert set(_flagged(cfg, results, tmp_path, fraction=0.05)) == set(who)  # the sampled rule too
    assert cross_check(cfg, results) == []  # the cheats commit what they did: only re-execution sees them


def test_the_catalog_covers_each_place_a_member_can_sit() -> None:
    assert {where for where, _ in cheats.CATALOG.values()} == {"any", "first", "not-first", "replica"}
    with pytest.raises(ValueError, match="unknown crew cheat"):
        cheats.build("bribery", PIPE, 4)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(("cfg", "liar", "found"), [
    (PIPE, (1, 2, 3), Mismatch("boundary", (1, 2), 3)),  # an activation, forward
    (PIPE, (2, 1, 0), Mismatch("boundary", (2, 1), 0)),  # a gradient, backward
    (DP, (DP.rank(0, 1), DP.rank(0, 0), 2), Mismatch("contribution", (1, 0), 2)),  # to a replica
], ids=["forward", "backward", "replica"])
def test_a_boundary_liar_is_convicted_by_the_signature_its_receiver_keeps(
        cfg: CrewConfig, liar: tuple[int, int, int], found: Mismatch, tmp_path: Path) -> None:
    results = run_local_crew(cfg, TOKENS, deadline_s=300, liar=liar, proof_root=tmp_path)
    mismatches = cross_check(cfg, results)
    assert found in mismatches
    publics = [k.public for k in local_keys(cfg)]
    convicted = {blame(m, results, publics, crew_id(cfg)) for m in mismatches if m.kind != "all-reduce"}
    assert convicted == {liar[0]}
    # Its receiver stands behind what it received: re-executing it from those inputs passes.
    assert liar[1] not in _flagged(cfg, results, tmp_path)
    # A receiver that forges its record instead (of an honest message the other way)
    # cannot show the sender's signature on it, and is blamed itself.
    src, dst = found.members
    received = dict(results[src].received)
    received[dst] = [b"\x00" * 32, *received[dst][1:]]
    forged = [*results[:src], replace(results[src], received=received), *results[src + 1 :]]
    assert Mismatch(found.kind, (dst, src), 0) in cross_check(cfg, forged)
    assert blame(Mismatch(found.kind, (dst, src), 0), forged, publics, crew_id(cfg)) == src


def _pair() -> tuple[SignedChannel, SignedChannel, list[bytes]]:
    keys = local_keys(PIPE)
    publics = [k.public for k in keys]
    wire: list[bytes] = []

    class Wire:
        def send(self, dst: int, data: bytes) -> None:
            wire.append(data)

        def recv(self, src: int) -> bytes:
            return wire.pop(0)

    crew = crew_id(PIPE)
    return (SignedChannel(Wire(), 0, keys[0].seed(), publics, crew),
            SignedChannel(Wire(), 1, keys[1].seed(), publics, crew), wire)


def test_a_signed_message_arrives_with_its_signature_kept_and_a_tampered_one_is_refused() -> None:
    a, b, wire = _pair()
    a.send(1, b"activation")
    assert b.recv(0) == b"activation"
    statement = boundary_statement(crew_id(PIPE), 0, 1, 0, hashlib.sha256(b"activation").digest())
    assert b.received_sigs[0] == [local_keys(PIPE)[0].sign(statement)]
    a.send(1, b"gradient")
    wire[0] = wire[0][:-1] + b"X"
    with pytest.raises(ChannelError, match="signature"):
        b.recv(0)
    a.send(1, b"next")  # signed as message 2; b still expects message 1: no skipping ahead
    with pytest.raises(ChannelError, match="message 1"):
        b.recv(0)
    wire.append(b"short")  # too short to carry a signature
    with pytest.raises(ChannelError):
        b.recv(0)
    assert len(b.received_sigs[0]) == 1


def test_a_receiver_without_a_signed_record_is_blamed() -> None:
    empty = StageResult(1, 1, 0, [], None, 0, [], 1, {}, {0: [b"\x01" * 32]}, [], b"", [], b"")
    sender = replace(empty, rank=0, stage=0, received={})
    assert blame(Mismatch("boundary", (0, 1), 0), [sender, empty], [b"", b""], b"crew") == 1
    assert blame(Mismatch("all-reduce", (0, 1), 0), [sender, empty], [b"", b""], b"crew") is None


def test_segment_inputs_round_trip_and_malformed_inputs_are_refused() -> None:
    inputs = SegmentInputs({0: [b"ab", b"", b"cde"], 3: [b""]})
    assert SegmentInputs.from_blob(inputs.to_blob()).messages == inputs.messages
    with pytest.raises(ProofError, match="not safetensors"):
        SegmentInputs.from_blob(b"\xff" * 40)
    overrun = save({"recv/0/data": torch.zeros(3, dtype=torch.uint8), "recv/0/len": torch.tensor([2, 2])})
    with pytest.raises(ProofError, match="overruns"):
        SegmentInputs.from_blob(overrun)
    negative = save({"recv/0/data": torch.zeros(3, dtype=torch.uint8), "recv/0/len": torch.tensor([-1, 4])})
    with pytest.raises(ProofError, match="overruns"):
        SegmentInputs.from_blob(negative)
    wrong = save({"recv/0/data": torch.zeros(3), "recv/0/len": torch.tensor([1])})
    with pytest.raises(ProofError, match="malformed"):
        SegmentInputs.from_blob(wrong)


def test_a_state_that_does_not_fit_the_stage_is_refused_before_it_is_loaded() -> None:
    train, _ = windows(TOKENS, PIPE)
    worker = StageWorker(PIPE, 1, None, train)  # type: ignore[arg-type]
    state = snapshot(worker)
    assert state_digest(state) == state_digest(snapshot(StageWorker(PIPE, 1, None, train)))  # type: ignore[arg-type]
    name = next(k for k in state if k.startswith("param/"))
    for bad in ({**state, name: torch.zeros(3)},
                {k: v for k, v in state.items() if k != name},
                {**state, "extra": torch.zeros(1)},
                {**state, "opt/0/exp_avg": torch.zeros(1)}):  # a partial optimizer state
        with pytest.raises(ProofError):
            restore(worker, bad)
    restore(worker, state)
    assert state_digest(snapshot(worker)) == state_digest(state)


def test_an_unreadable_or_oversized_proof_is_a_finding_against_its_member(tmp_path: Path) -> None:
    c = Commitment(1, [b"\x00" * 32] * 5, {}, {}, [])
    bounds = PIPE.boundaries()
    train, _ = windows(TOKENS, PIPE)
    f = check_segment(PIPE, train, bounds, c, 0, b"junk", b"junk")
    assert f is not None and (f.rank, f.what) == (1, "unreadable proof blob")
    member = tmp_path / "rank-1"
    member.mkdir()
    with open(member / "state-0", "wb") as fh:  # sparse: no real disk used
        fh.truncate(MAX_PROOF_BLOB + 1)
    with pytest.raises(ProofError, match="cap"):
        local_fetch(tmp_path)(1, 0)
    (member / "state-0").write_bytes(b"not safetensors")
    with pytest.raises(ProofError, match="not safetensors"):
        local_fetch(tmp_path)(1, 0)
    (member / "state-0").unlink()
    with pytest.raises(ProofError, match="cannot be opened"):
        local_fetch(tmp_path)(1, 0)  # a boundary it never stored


def test_a_stored_state_keeps_only_visited_cache_rows_and_reopens_to_its_digest(tmp_path: Path) -> None:
    from safetensors.torch import load

    from node.compute.crew.proof import _cache_rows, open_state, open_states

    train, _ = windows(TOKENS, PIPE)
    worker = StageWorker(PIPE, 1, None, train)  # type: ignore[arg-type]  # a middle stage: both caches
    assert worker.sender is not None and worker.receiver is not None
    worker.sender.cache.m[3] = 1.5
    worker.sender.cache.seen[3] = True
    state = snapshot(worker)
    (tmp_path / "state-0").write_bytes(save(_cache_rows(state, torch.zeros(0, dtype=torch.int64))))
    (tmp_path / "state-1").write_bytes(save(_cache_rows(state, torch.tensor([3, 5]))))
    assert load((tmp_path / "state-1").read_bytes())["send/m_rows"].shape[0] == 2  # not all 16 samples
    assert state_digest(load(open_state(tmp_path, 1))) == state_digest(state)
    assert list(open_states(tmp_path, 2)) == [open_state(tmp_path, 0), open_state(tmp_path, 1)]
    out_of_range = {**_cache_rows(state, torch.tensor([3, 5])), "recv/rows": torch.tensor([3, 99])}
    (tmp_path / "state-1").write_bytes(save(out_of_range))
    with pytest.raises(ProofError, match="do not fit"):
        open_state(tmp_path, 1)
