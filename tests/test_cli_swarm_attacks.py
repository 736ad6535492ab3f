"""`polnet swarm up --attack` and `--perturb`: bad names are refused before anything
starts; a real swarm under an attack keeps one chain, bans the attacker and no honest
node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attack", "nuke"], "--attack must be one of"),
        (["--perturb", "kill,reboot"], "--perturb takes a comma list"),
        (["--perturb", "pause", "--mode", "inprocess"], "needs --mode process"),
    ],
)
def test_unknown_attacks_and_perturbations_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["swarm", "up", "--dir", str(tmp_path / "s"), *args])
    assert result.exit_code == 2  # bad input (cli/output.py EXIT_BAD_INPUT)
    assert message in result.output
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_swarm_under_a_vote_flood_keeps_one_chain_and_bans_only_the_attacker(tmp_path: Path) -> None:
    result = runner.invoke(app, ["swarm", "up", "--nodes", "4", "--blocks", "30", "--duration", "200",
                                 "--attack", "vote-flood", "--dir", str(tmp_path / "s"), "--json"])
    out = result.stdout  # the report alone: progress and warnings go to stderr
    report = json.loads(out[out.index("{"):])
    assert result.exit_code == 0, (report, result.stderr[-2000:])
    assert report["same_block_at_agreed_height"] and report["min_height"] >= 30
    assert report["faults"]["attack"] == "vote-flood"
    assert report["faults"]["attacker_banned"] is True
    assert report["faults"]["honest_bans"] == []
