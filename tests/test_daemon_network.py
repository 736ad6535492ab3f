"""A dozen daemons as separate processes on loopback form a network and commit blocks;
one killed with SIGKILL restarts from its data dir and catches up with nothing lost."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from node.daemon.layout import layout_localnet
from tests.daemon_harness import get, start, status, stop, wait_ready

#: The heaviest multi-process suites run one at a time (the Makefile runs xdist with
#: --dist loadgroup): next to another one, this network once stalled at height 1 in CI.
pytestmark = pytest.mark.xdist_group("heavy-daemons")

NODES = 12
#: Generous bounds: the box has 2 shared cores and each daemon is a python process.
PROGRESS_TIMEOUT_S = 150.0
#: A dozen processes importing torch and libp2p at once on 2 cores.
READY_TIMEOUT_S = 150.0


def wait_until(
    pred: Callable[[], bool], timeout: float, what: str, eps: Sequence[dict[str, Any]] = ()
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: {_where(eps)}")


def _where(eps: Sequence[dict[str, Any]]) -> str:
    """Each node's height, round, step and peer count: what a timeout needs to be read."""
    rows = []
    for i, ep in enumerate(eps):
        try:
            st = status(ep)
            ch = st.get("chain") or {}
            rows.append(f"n{i} h={st['height']} r={ch.get('round')} {ch.get('step')} peers={st.get('peers')}")
        except (OSError, ValueError) as exc:  # down, or answering garbage: say so, keep the rest
            rows.append(f"n{i} unreachable ({exc})")
    return "; ".join(rows)


def heights(eps: list[dict[str, Any]]) -> list[int]:
    return [status(ep)["height"] for ep in eps]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(420)
def test_processes_commit_blocks_and_a_sigkilled_node_catches_up(tmp_path: Path) -> None:
    dirs = layout_localnet(tmp_path / "net", NODES, chain_id="polnet-itest", block_interval_ms=500)
    procs: list[subprocess.Popen[bytes]] = [start(d) for d in dirs]
    try:
        eps = [wait_ready(d, p, READY_TIMEOUT_S) for d, p in zip(dirs, procs, strict=True)]
        wait_until(lambda: min(heights(eps)) >= 3, PROGRESS_TIMEOUT_S, "every node at height 3", eps)
        assert all(status(ep)["peers"] >= 1 for ep in eps)
        assert "polnet_messages_in_total" in get(eps[0]["metrics"]).decode()

        # Kill one validator outright; the other eleven hold > 2/3 of the stake and go on.
        victim = NODES - 1
        committed = json.loads(get(f"{eps[victim]['admin']}/block/{status(eps[victim])['height']}"))
        assert stop(procs[victim], signal.SIGKILL) == -signal.SIGKILL
        before = heights(eps[:victim])
        wait_until(
            lambda: min(heights(eps[:victim])) >= max(before) + 3,
            PROGRESS_TIMEOUT_S,
            "progress without it",
            eps[:victim],
        )

        # Restarted from its data dir, it replays what it had and syncs the rest.
        procs[victim] = start(dirs[victim])
        eps[victim] = wait_ready(dirs[victim], procs[victim])
        st = status(eps[victim])
        assert st["recovered"] is True
        # Nothing it had committed before the kill is lost: the block is back, unchanged.
        assert st["height"] >= committed["height"]
        assert json.loads(get(f"{eps[victim]['admin']}/block/{committed['height']}")) == committed
        target = max(heights(eps[:victim]))
        wait_until(
            lambda: status(eps[victim])["height"] >= target,
            PROGRESS_TIMEOUT_S,
            "the restarted node to catch up",
            eps,
        )

        # Every node holds the same block at a height all have passed.
        h = min(heights(eps))
        hashes = {json.loads(get(f"{ep['admin']}/block/{h}"))["hash"] for ep in eps}
        assert len(hashes) == 1
        # A clean stop of all twelve at once (one at a time would take a dozen grace periods).
        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(timeout=30) for p in procs] == [0] * NODES
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
