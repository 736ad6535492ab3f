import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app


def test_demo_trains_catches_the_cheater_and_settles_every_task(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--json", "--nodes", "12", "--tasks", "3", "--seed", "2",
                                      "--report-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["invariants_held"] is True
    assert summary["settled"] + summary["refunded"] == summary["tasks"] == 3
    assert summary["cheats_caught"] == summary["cheats"]
    assert summary["honest_stake_lost"] == 0
    # The character transformer went through the market too: verified weights, written text.
    assert summary["lm_settled_valid"] is True and summary["lm_below_unigram"] > 0.2
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report.json").read_text()) == summary


def test_demo_refuses_a_swarm_too_small_to_elect_every_role() -> None:
    result = CliRunner().invoke(app, ["demo", "--nodes", "2"])
    assert result.exit_code == 2
