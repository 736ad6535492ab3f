import json

from typer.testing import CliRunner

from cli.main import app


def test_demo_trains_catches_the_cheater_and_settles_every_task() -> None:
    result = CliRunner().invoke(app, ["demo", "--json", "--nodes", "12", "--tasks", "3", "--seed", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["invariants_held"] is True
    assert summary["settled"] + summary["refunded"] == summary["tasks"] == 3
    assert summary["cheats_caught"] == summary["cheats"]
    assert summary["honest_stake_lost"] == 0


def test_demo_refuses_a_swarm_too_small_to_elect_every_role() -> None:
    result = CliRunner().invoke(app, ["demo", "--nodes", "2"])
    assert result.exit_code == 2
