"""A real daemon in a subprocess: ready, metrics, SIGTERM, restart, SIGKILL recovery."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.daemon_harness import get, make_node, start, status, stop, wait_ready


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_daemon_serves_stops_on_sigterm_and_recovers_after_sigkill(tmp_path: Path) -> None:
    dd = make_node(tmp_path / "n")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # First run: ready, status and metrics served, clean SIGTERM.
        proc = start(dd)
        procs.append(proc)
        ep = wait_ready(dd, proc)
        st = status(ep)
        assert (st["boots"], st["crashes"], st["recovered"]) == (1, 0, False)
        # A validator-only node does no market compute: no benchmark, no torch loaded.
        assert (st["capacity"]["flops"], st["capacity"]["torch_version"]) == (0, "")
        metrics = get(ep["metrics"]).decode()
        assert "polnet_peers 0.0" in metrics
        assert "polnet_boots 1.0" in metrics
        assert stop(proc) == 0
        assert not dd.endpoints.exists()

        # Second run resumes the same data dir and knows the first stopped cleanly.
        proc = start(dd)
        procs.append(proc)
        ep = wait_ready(dd, proc)
        st = status(ep)
        assert (st["boots"], st["clean_stops"], st["crashes"], st["recovered"]) == (2, 1, 0, False)
        assert stop(proc, signal.SIGKILL) == -signal.SIGKILL

        # Third run after SIGKILL: the stale endpoints file and lock do not block it,
        # and it knows it is recovering from a crash.
        proc = start(dd)
        procs.append(proc)
        ep = wait_ready(dd, proc)
        st = status(ep)
        assert (st["boots"], st["clean_stops"], st["crashes"], st["recovered"]) == (3, 1, 1, True)
        assert stop(proc, signal.SIGINT) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_second_daemon_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    dd = make_node(tmp_path / "n")
    first = start(dd)
    try:
        wait_ready(dd, first)
        second = start(dd, log=tmp_path / "second.log")
        assert second.wait(timeout=30) == 2  # a data dir in use: the wrong --data-dir
        assert "another polnet node is running" in (tmp_path / "second.log").read_text()
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
