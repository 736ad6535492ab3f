"""A dozen transport hosts as separate OS processes on loopback TCP: they form a
mesh, every node receives every gossip message exactly once, a blob moves between
processes, and all of them shut down cleanly."""

from __future__ import annotations

import time

import pytest

from node.transport.procswarm import ProcSwarm
from protocol.commands import TOPIC_TXS

N = 12
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(240)]


def _wait_for_mesh(sw: ProcSwarm, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for i in range(sw.n):
        while sw.stats(i)["mesh"][TOPIC_TXS] < 1:
            assert time.monotonic() < deadline, f"node {i} has no mesh peer"
            time.sleep(0.2)


def test_a_dozen_processes_form_a_network_deliver_gossip_and_move_a_blob() -> None:
    with ProcSwarm(N, "mp") as sw:
        sw.start(timeout_s=120)
        _wait_for_mesh(sw, 60)
        publishers = (0, 6)
        for p in publishers:
            sw.send(p, "publish 5 20")
        for i in range(N):
            want = 5 * sum(1 for p in publishers if p != i)
            got = sw.collect(i, lambda e: e["event"] == "recv", want, 60)
            senders = {e["sender"] for e in got}
            assert len(got) == want, f"node {i} got {len(got)} of {want}"
            assert senders == {sw.keys[p].public.hex() for p in publishers if p != i}
            assert len({(e["sender"], e["nonce"]) for e in got}) == want  # no duplicates
        deadline = time.monotonic() + 30
        while sw.keys[1].public.hex() not in sw.stats(2)["peers"]:  # node 2 dials node 1 (ring)
            assert time.monotonic() < deadline, "node 2 never connected to its bootstrap node 1"
            time.sleep(0.2)
        sw.send(1, "put 300000")
        digest = sw.wait_for(1, lambda e: e["event"] == "stored", 30)["digest"]
        sw.send(2, f"fetch {digest} 400000")
        answer = sw.wait_for(2, lambda e: e["event"] in ("fetched", "fetch_failed"), 60)
        assert answer == {"event": "fetched", "digest": digest, "size": 300000}
        assert all(sw.stats(i)["metrics"]["messages_rejected"] == 0 for i in range(N))
        codes = sw.stop()
    assert codes == [0] * N


def test_a_peer_killed_with_sigkill_restarts_on_its_port_and_is_back_in_the_mesh() -> None:
    with ProcSwarm(4, "kill") as sw:
        sw.start(timeout_s=90)
        _wait_for_mesh(sw, 60)
        assert sw.kill(2) == -9
        time.sleep(1.0)
        sw.send(0, "publish 2 10")  # the survivors keep working without it
        for i in (1, 3):
            assert len(sw.collect(i, lambda e: e["event"] == "recv", 2, 30)) == 2
        sw.restart(2, timeout_s=60)
        deadline = time.monotonic() + 60
        while len(sw.stats(2)["peers"]) < 2 or sw.stats(2)["mesh"][TOPIC_TXS] < 1:
            assert time.monotonic() < deadline, "restarted node did not rejoin"
            time.sleep(0.2)
        sw.send(0, "publish 3 10")
        got = sw.collect(2, lambda e: e["event"] == "recv", 3, 30)
        assert len(got) == 3 and {e["sender"] for e in got} == {sw.keys[0].public.hex()}
        assert sw.stop() == [0, 0, 0, 0]
