"""Disputes on real daemon processes: the honest solver defends, a cheat is pinned to one op.

Separate `polnet node run` processes on loopback (py-libp2p, sqlite, torch), laid out as
`polnet swarm up` lays them out. What netsim shows about disputes must hold here too:

- a false challenger (staked, challenging every ACCEPT without checking) against an
  honest solver loses its bonds, and the solver keeps its stake and is paid, even when
  the solver was SIGKILLed between its proof and the dispute and came back from disk;
- a solver whose bisection answers are inconsistent (`bisect_inconsistent`) is pinned to
  one operation, which the validators re-executed (their logs name it and its FLOPs),
  and is slashed for it; nobody honest loses anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.swarm_market import honest, swarm_roles
from tests.market_daemons import MarketNet

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: Generous: the box may be loaded; a task takes 1-3 minutes here.
TASK_TIMEOUT_S = 540.0


def _honest_penalties(net: MarketNet, task: dict) -> list[dict]:  # type: ignore[type-arg]
    return [p for p in task["penalties"]
            if net.index_of(p["who"]) is not None and honest(net.roles[net.index_of(p["who"])])]


@pytest.mark.timeout(900)
def test_an_honest_solver_killed_before_the_dispute_still_beats_a_false_challenger(tmp_path: Path) -> None:
    roles = swarm_roles(6, cheaters=0, false_challengers=1)
    liar = next(i for i, r in enumerate(roles) if r.adversary == "false_challenger")
    net = MarketNet(tmp_path / "net", roles).start()
    try:
        (tid,) = net.submit(1, cheaters=0)
        # Every verifier committed (it fetched and checked the proof): now kill the solver,
        # before the challenges and the games. It must come back from its own disk (the
        # proof's leaves, its checkpoints) and defend every game the false challenger starts.
        task = net.wait_status(tid, ("REVEAL", "CHALLENGE", "SETTLED", "REFUNDED"), TASK_TIMEOUT_S)
        solver = net.index_of(task["solver"])
        assert solver is not None and solver != liar
        net.kill(solver)
        net.restart(solver)
        task = net.wait_status(tid, ("SETTLED", "REFUNDED"), TASK_TIMEOUT_S)
    finally:
        net.stop()
    assert task["status"] == "SETTLED" and task["proof_valid"] is True, task
    assert task["challenges"] >= 1, "the false challenger never challenged"
    forfeits = [p for p in task["penalties"] if net.index_of(p["who"]) == liar]
    assert forfeits and all(p["why"] == "bond_forfeit" for p in forfeits)
    assert _honest_penalties(net, task) == [], task["penalties"]
    assert task["paid"] > 0
    # The restarted solver defended from its own disk: it opened the game with the
    # segment's checkpoints and posted its digest at the first midpoint (a game-hash job
    # after the restart). The blind challenger never answers (protocol/market/adversaries.py
    # says why), so the game ends in its forfeit rather than at arbitration.
    after_restart = net.log(solver).split('event="node ready"')[-1]
    assert "job=hash:" in after_restart, after_restart[-2000:]


@pytest.mark.timeout(900)
def test_verifiers_that_cannot_fetch_a_dead_solvers_proof_slash_nobody(tmp_path: Path) -> None:
    net = MarketNet(tmp_path / "net", swarm_roles(6, cheaters=0)).start()
    try:
        (tid,) = net.submit(1, cheaters=0)
        task = net.wait_status(tid, ("COMMIT", "REVEAL", "SETTLED", "REFUNDED"), TASK_TIMEOUT_S)
        solver = net.index_of(task["solver"])
        assert solver is not None
        # Down while its verifiers fetch: they report the segment unavailable (not a REJECT),
        # the validators try to fetch it themselves once it is back, and find it served.
        net.kill(solver)
        net.restart(solver)
        task = net.wait_status(tid, ("SETTLED", "REFUNDED"), TASK_TIMEOUT_S)
    finally:
        net.stop()
    assert task["penalties"] == [], task["penalties"]
    assert task["status"] == "REFUNDED" or task["proof_valid"] is True, task


@pytest.mark.timeout(900)
def test_an_inconsistent_bisection_liar_is_pinned_to_one_reexecuted_op_and_slashed(tmp_path: Path) -> None:
    roles = swarm_roles(6, cheaters=1, cheats=("bisect_inconsistent",))
    cheater = next(i for i, r in enumerate(roles) if r.cheat)
    net = MarketNet(tmp_path / "net", roles).start()
    try:
        (tid,) = net.submit(1, cheaters=1)  # the bait task: only the cheater's price fits
        task = net.wait_status(tid, ("SETTLED", "REFUNDED"), TASK_TIMEOUT_S)
    finally:
        net.stop()
    assert net.index_of(task["solver"]) == cheater, task
    assert task["status"] == "SETTLED" and task["proof_valid"] is False, task
    assert any(net.index_of(p["who"]) == cheater and p["why"] == "solver_cheat" for p in task["penalties"])
    assert _honest_penalties(net, task) == [], task["penalties"]
    votes = [e for i in range(len(roles)) for e in net.log_events(i, "market.arbitrated")]
    assert votes, "no validator re-executed an operation"
    assert all(v["defender_right"].lower() == "false" and v["op"] and "flops" in v for v in votes), votes
