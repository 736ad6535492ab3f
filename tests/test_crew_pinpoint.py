"""Disputes about a crew member pinpoint to one op inside its stage (node/compute/crew/dispute.py).

Pins that the member's op chain (protocol/pol/crew_ops.py, run by optrace.py) is the
fused step bit for bit, for every member of a pipeline and of a data-parallel crew (so
honest parties agree on every op); that each cheat of the crew catalog is narrowed to
the op its hook changes and loses there, with one referee call and no more rounds than
the bound; and that an honest member beats a challenger who lies about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.compute.crew import cheats
from node.compute.crew.dispute import CrewDisputeReport, pinpoint_member, received_by_step, replay_states
from node.compute.crew.launch import run_local_crew
from node.compute.crew.optrace import CrewSource, StepContext, ValueStore, digest
from node.compute.crew.pipeline import HONEST, Behaviour, CrewConfig, windows
from node.compute.crew.proof import (
    Commitment,
    SegmentInputs,
    load_blob,
    local_fetch,
    member_profile,
    open_state,
)
from protocol.pol.crew_ops import StageLayout, crew_geometry, crew_step_ops
from protocol.pol.ops import OpKind
from protocol.pol.pinpoint import Outcome
from tests.test_crew_proof import DP, PIPE, TOKENS

SEGMENT = 3  # the last of PIPE's four one-step segments: every cache holds later passes


def _honest_chain_matches(cfg: CrewConfig, root: Path, results: list, rank: int, segment: int) -> None:
    train, _ = windows(TOKENS, cfg)
    ctx = StepContext(cfg, rank, train)
    a, b = cfg.boundaries()[segment], cfg.boundaries()[segment + 1]
    start = load_blob(open_state(root / f"rank-{rank}", segment))
    inputs = SegmentInputs.from_blob(local_fetch(root)(rank, segment)[1])
    states = replay_states(ctx, start, inputs, a, b, HONEST)
    src = CrewSource(ctx, states, received_by_step(ctx, inputs, a, b), ValueStore())
    with member_profile():
        computed = [tuple(digest(v) for v in outs) for outs in src.step_values(a, claimed=False)]
    assert computed == src.step_trace(a), f"member {rank}: the op chain differs from the fused step"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("cfg", [PIPE, DP], ids=["pipe", "dp"])
def test_every_members_op_chain_is_its_fused_step_bit_for_bit(cfg: CrewConfig, tmp_path: Path) -> None:
    results = run_local_crew(cfg, TOKENS, deadline_s=300, proof_root=tmp_path)
    for rank in range(cfg.world):
        for segment in (0, SEGMENT):
            _honest_chain_matches(cfg, tmp_path, results, rank, segment)


def _dispute(cfg: CrewConfig, root: Path, results: list, rank: int, behaviour: Behaviour,
             challenger: Behaviour = HONEST) -> CrewDisputeReport | None:
    member = root / f"rank-{rank}"
    inputs = local_fetch(root)(rank, SEGMENT)[1]
    return pinpoint_member(cfg, TOKENS, Commitment.of(results[rank]), SEGMENT, open_state(member, SEGMENT),
                           open_state(member, SEGMENT + 1), inputs, behaviour, challenger)


#: Where each cheat's hook acts: the op its dispute must end at.
EXPECTED_OP = {"data_order": OpKind.BATCH, "truncated": OpKind.BACKWARD, "frozen": OpKind.BACKWARD,
               "lazy_backward": OpKind.PACK, "noisy": OpKind.UPDATE, "negated_gradient": OpKind.CONTRIB,
               "skipped_steps": OpKind.UPDATE}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(("cfg", "who"), [
    (PIPE, {0: "data_order", 1: "truncated", 3: "noisy"}),
    # a lazy or frozen member sends zeros upstream, so each sits where no other cheat is
    # upstream of it: a cheat fed zero gradients computes what an honest member would
    (PIPE, {2: "lazy_backward"}),
    (DP, {DP.rank(0, 1): "negated_gradient", DP.rank(1, 0): "skipped_steps", DP.rank(1, 1): "frozen"}),
], ids=["pipe-a", "pipe-b", "dp"])
def test_each_catalog_cheat_is_pinpointed_to_the_op_its_hook_changes_and_loses_there(
        cfg: CrewConfig, who: dict[int, str], tmp_path: Path) -> None:
    results = run_local_crew(cfg, TOKENS, deadline_s=300, cheats=who, proof_root=tmp_path)
    for rank, name in who.items():
        found = _dispute(cfg, tmp_path, results, rank, cheats.build(name, cfg, cfg.total_steps))
        assert found is not None, name
        r = found.report
        assert r.outcome is Outcome.CHALLENGER_WINS, (name, r.reason)
        assert found.op.kind is EXPECTED_OP[name], (name, r.reason)
        assert r.step == cfg.boundaries()[SEGMENT]
        assert r.referee_calls == 1 and r.rounds <= r.bound, (name, r)
    honest = next(rank for rank in range(cfg.world) if rank not in who)
    assert _dispute(cfg, tmp_path, results, honest, HONEST) is None  # honest vs honest: nothing to play


@pytest.mark.slow
@pytest.mark.integration
def test_an_honest_member_beats_a_challenger_who_lies_about_its_step(tmp_path: Path) -> None:
    results = run_local_crew(PIPE, TOKENS, deadline_s=300, proof_root=tmp_path)
    for rank, liar in ((1, cheats.Noisy(7)), (2, cheats.LazyBackward())):
        found = _dispute(PIPE, tmp_path, results, rank, HONEST, challenger=liar)
        assert found is not None
        assert found.report.outcome is Outcome.DEFENDER_WINS, found.report.reason
        assert found.op.kind is EXPECTED_OP[liar.name]


def test_a_members_op_list_reads_only_earlier_ops_and_ends_in_its_state() -> None:
    for lay in (StageLayout(True, False, 2, 1, (2, 12)), StageLayout(False, False, 3, 2, (12,)),
                StageLayout(False, True, 2, 1, (12, 4)), StageLayout(True, True, 1, 3, (2, 4))):
        ops = crew_step_ops(lay)
        assert ops[-1].kind is OpKind.STATE and len(ops[-1].inputs) == lay.n_weights + lay.n_rest
        assert all(r.op < j for j, op in enumerate(ops) for r in op.inputs)
        recvs = sum(op.kind is OpKind.RECV for op in ops)
        assert recvs == lay.micro_batches * ((not lay.first) + (not lay.last)) + lay.replicas - 1
        sent = next(op for op in ops if op.kind is OpKind.SENT)
        sends = lay.micro_batches * ((not lay.first) + (not lay.last)) + lay.replicas - 1
        assert len(sent.inputs) == 1 + sends
        assert sum(op.kind is OpKind.UPDATE for op in ops) == lay.n_params
        assert len(crew_geometry(lay).ops) == len(ops)
