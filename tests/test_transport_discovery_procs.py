"""Discovery across separate processes: nodes told of one node only find each other, and
a joiner fetches a proof blob from a solver it was never told about, even when it keeps
a single connection (so the blob is found through the provider lookup, not a full mesh)."""

from __future__ import annotations

import pytest

from node.transport.procswarm import ProcSwarm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
NODES = 5


def _wait_all(sw: ProcSwarm, pred: object, timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    for i in range(sw.n):
        while not pred(sw.stats(i)):  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"node {i}: {sw.stats(i)}")
            time.sleep(0.2)


def test_processes_told_of_one_node_find_every_other() -> None:
    with ProcSwarm(NODES, label="procdisc", hub=True) as sw:
        sw.start(timeout_s=120)
        _wait_all(sw, lambda st: len(st["peers"]) == NODES - 1, 90)


def test_a_joiner_fetches_a_proof_from_a_solver_it_was_never_told_about() -> None:
    # Everyone is told of node 0 only and keeps one connection: the joiner (node 1) and
    # the solver (node 4) never connect unless the joiner goes looking for the blob.
    with ProcSwarm(NODES, label="procprov", hub=True, target_peers=1) as sw:
        sw.start(timeout_s=120)
        _wait_all(sw, lambda st: len(st["peers"]) >= 1, 60)
        sw.send(4, "put 200000")
        digest = sw.wait_for(4, lambda e: e["event"] == "stored", 30)["digest"]
        solver = sw.keys[4].public.hex()
        assert solver not in sw.stats(1)["peers"]
        sw.send(1, f"fetch {digest} 1000000")
        got = sw.wait_for(1, lambda e: e["event"] in ("fetched", "fetch_failed"), 60)
        assert got["event"] == "fetched" and got["size"] == 200000, got
        assert solver in sw.stats(1)["peers"]
