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


@pytest.mark.parametrize("args, why", [
    (["--crew", "2x2"], "it needs --tasks"),
    (["--crew", "2x2", "--tasks", "1", "--nodes", "8"], "need 8 workers: --nodes 9 at least"),
    (["--crew", "2by2", "--tasks", "1", "--nodes", "9"], "--crew must be STAGESxREPLICAS"),
    (["--crew", "1x1", "--tasks", "1", "--nodes", "9"], "2 to 16 members"),
    (["--crew", "2x2", "--tasks", "1", "--nodes", "9", "--private"], "cannot be private"),
    (["--crew", "2x2", "--tasks", "1", "--nodes", "9", "--mode", "inprocess"], "separate processes"),
])
def test_a_crew_swarm_of_the_wrong_shape_is_refused_before_any_node_starts(tmp_path: Path, args: list[str],
                                                                            why: str) -> None:
    result = runner.invoke(app, ["swarm", "up", *args, "--dir", str(tmp_path / "s")])
    assert result.exit_code != 0
    assert why in " ".join((result.stdout + result.stderr).split())
    assert not (tmp_path / "s").exists()


def test_the_live_view_shows_a_crew_members_step_stage_and_bytes() -> None:
    from cli.swarm_cmd import _job

    job = {"kind": "crew-train", "step": 12, "total": 64, "detail": "rank 2 stage 1: sent 0.42 MB"}
    assert _job(job) == "crew-train 12/64 rank 2 stage 1: sent 0.42 MB"
    assert _job({"kind": "verify", "step": 0, "total": 0, "detail": ""}) == "verify"
    assert _job(None) == ""
