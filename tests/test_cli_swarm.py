"""`polnet swarm up` end to end in its in-process mode: real daemons (libp2p on
loopback, sqlite, consensus) in one process commit blocks, agree, and stop cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.swarm_inproc import IN_PROCESS_MAX_NODES, in_process

runner = CliRunner()


def test_small_swarms_run_in_one_process_and_larger_ones_as_processes() -> None:
    assert in_process(IN_PROCESS_MAX_NODES, "auto")
    assert not in_process(IN_PROCESS_MAX_NODES + 1, "auto")
    assert not in_process(2, "process") and in_process(12, "inprocess")


@pytest.mark.timeout(120)
def test_an_in_process_swarm_commits_agreeing_blocks_and_stops_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["swarm", "up", "--nodes", "3", "--blocks", "2", "--duration", "90",
                                 "--mode", "inprocess", "--dir", str(tmp_path / "s"), "--json"])
    out = result.stdout
    report = json.loads(out[out.index("{"):])
    assert result.exit_code == 0, (report, (tmp_path / "s" / "swarm.log").read_text()[-2000:])
    assert report["min_height"] >= 2
    assert report["same_block_at_agreed_height"] is True
    assert report["exit_codes"] == [0, 0, 0]


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["swarm", "up", "--mode", "threads", "--dir", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "--mode must be one of" in result.stdout + result.stderr
    assert not (tmp_path / "s").exists()
