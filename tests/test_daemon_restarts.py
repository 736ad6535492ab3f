"""Four validator daemons as separate processes, each told of one other only: discovery
forms the full mesh, and restarts (kill -9 or SIGTERM, one node, several, all of them in
every order, staggered) resume the chain within RESUME_BOUND_S."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cli.swarm_restarts import LocalNet, RestartPlan, every_order, run_plan
from node.daemon.layout import layout_localnet

VALIDATORS = 4
#: The bound the issue sets: any restart order resumes within 30 s.
RESUME_BOUND_S = 30.0
STAGGER_S = 2.0
MESH_TIMEOUT_S = 60.0


def _mesh(tmp: Path) -> LocalNet:
    dirs = layout_localnet(tmp / "net", VALIDATORS, chain_id="polnet-restarts", block_interval_ms=500,
                           bootstrap_one=True)
    net = LocalNet(dirs)
    net.start_all()
    net.wait_ready()
    net.wait_for(lambda: all((n.status() or {}).get("peers") == VALIDATORS - 1 for n in net.nodes),
                 MESH_TIMEOUT_S, "a full mesh")
    net.wait_height(3)
    return net


def _check(net: LocalNet, plans: list[RestartPlan]) -> list[float]:
    times = []
    for plan in plans:
        r = run_plan(net, plan, timeout=RESUME_BOUND_S + 60)
        assert r.resume_s <= RESUME_BOUND_S, f"{plan.label} resumed after {r.resume_s} s"
        times.append(r.resume_s)
    # Every node holds the same block at a height all have passed.
    h = min(net.heights())
    assert len({_hash(net, i, h) for i in range(len(net))}) == 1
    return times


def _hash(net: LocalNet, i: int, height: int) -> str:
    from cli.swarm_restarts import get_json

    admin = net.nodes[i].admin
    assert admin is not None
    return str(get_json(f"{admin}/block/{height}")["hash"])


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_validators_told_of_one_other_form_a_full_mesh_and_survive_restarts(tmp_path: Path) -> None:
    net = _mesh(tmp_path)
    try:
        _check(net, [
            RestartPlan((1,), signal.SIGKILL, 0.0),  # one validator crashes
            RestartPlan((2, 0), signal.SIGTERM, STAGGER_S),  # half of them: the chain halts meanwhile
            RestartPlan((3, 1, 0, 2), signal.SIGKILL, STAGGER_S),  # all of them, staggered
        ])
    finally:
        net.close()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_every_restart_order_of_four_validators_resumes_within_the_bound(tmp_path: Path) -> None:
    """All 24 orders of a full staggered restart (kill -9 and SIGTERM alternating), one
    network, one after the other."""
    net = _mesh(tmp_path)
    try:
        times = _check(net, every_order(VALIDATORS, STAGGER_S))
        assert len(times) == 24
    finally:
        net.close()
