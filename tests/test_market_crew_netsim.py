"""Crew tasks through the whole market in netsim (`MarketConfig(workload="crew")`): real
crews of member processes (node/compute/crew) elected, trained, committed, verified
member by member and settled by the chain the simulated validators agree on. The same
three cases the daemon suite runs on separate processes (tests/test_market_daemons.py):
an honest crew is paid; one cheating member alone is slashed; a member that vanishes
mid-run is slashed for silence and the task settles with a new crew."""

from __future__ import annotations

import pytest

from netsim.scenarios.market.build import MarketConfig
from netsim.scenarios.market.report import MarketReport
from netsim.scenarios.market.run import run_market

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]

#: 4 validators, 2 submitters, a whistleblower and 9 workers: a crew of 4 and a verifier
#: for each member, with room to re-place a crew without the one that vanished.
NODES = 16


def crew_run(seed: int, **kw: object) -> MarketReport:
    cfg = MarketConfig(seed=seed, nodes=NODES, tasks=1, compute="torch", workload="crew", **kw)  # type: ignore[arg-type]
    report = run_market(cfg)
    assert all(report.invariants.values()), f"seed={seed}: {report.invariants}"
    return report


def test_an_honest_crew_task_settles_and_pays_every_member_its_share() -> None:
    r = crew_run(1)
    (task,) = r.final_tasks
    assert task.status.name == "SETTLED" and task.outcome == "valid"
    assert len(task.crew) == 4 and not task.convicted and not task.penalties
    assert sorted(v.segment for v in task.verifiers) == [0, 1, 2, 3]
    assert r.tasks[0].paid == sum(task.gflops // 4 * p for p in task.crew_prices)


def test_one_cheating_member_alone_is_slashed_and_the_others_are_paid() -> None:
    r = crew_run(2, byzantine_fraction=0.12)  # one worker trains its stage frozen; seed 2 seats it
    (task,) = r.final_tasks
    cheat = [n for n in r.nodes if n.role.startswith("byzantine:")]
    assert len(cheat) == 1 and r.node_keys[cheat[0].index] in task.crew
    assert task.outcome == "invalid" and task.convicted == [r.node_keys[cheat[0].index]]
    assert [n.index for n in r.nodes if n.slashed] == [cheat[0].index]
    assert r.tasks[0].paid == 3 * (task.gflops // 4) * task.crew_prices[0]


def test_a_vanished_member_is_slashed_for_silence_and_a_new_crew_settles_the_task() -> None:
    r = crew_run(4, crew_vanish=2)  # seed 4 seats one of the two in the first crew
    (task,) = r.final_tasks
    gone = [n for n in r.nodes if n.role == "byzantine:vanish" and n.slashed]
    assert len(gone) == 1
    assert [p.kind.name for p in task.penalties] == ["SILENCE"]
    assert r.node_keys[gone[0].index] in task.excluded and r.node_keys[gone[0].index] not in task.crew
    assert task.status.name == "SETTLED" and task.outcome == "valid" and task.replacements == 1


def test_a_pipeline_crew_is_seated_along_the_links_its_members_committed() -> None:
    """Nodes stand on a line (each hop 40 ms more); every worker commits what it measured
    and the ledger seats the elected 4-stage pipeline in line order (seed 2 draws nodes
    11, 7, 13, 9: without committed links the crew keeps that order)."""
    r = crew_run(2, crew_stages=4, crew_replicas=1, line_spacing_ms=40)
    (task,) = r.final_tasks
    assert task.status.name == "SETTLED" and task.outcome == "valid"
    where = [r.node_keys.index(m) for m in task.crew]
    assert where in (sorted(where), sorted(where, reverse=True)), where
