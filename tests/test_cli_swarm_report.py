"""The swarm's verdict is judged from its report after the report is printed."""

import copy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.swarm_cmd import Plan, _print_report, _problem

REPORT = {
    "nodes": 6,
    "same_block_at_agreed_height": True,
    "supply_conserved_on_every_node": True,
    "min_height": 66,
    "error": None,
    "market": {
        "tasks": [
            {"task": "a", "status": "SETTLED", "outcome": "invalid", "solver": 5, "cheat": "skipped_steps",
             "accuracy": None, "paid": 0, "challenges": 0},
            {"task": "b", "status": "SETTLED", "outcome": "valid", "solver": 2, "cheat": None,
             "accuracy": 0.93, "paid": 60, "challenges": 0},
        ],
        "settled": 2, "refunded": 0, "slashed_nodes": [5], "cheats_placed": 1, "cheats_caught": 1,
        "honest_slashed": [],
    },
}


def test_printing_the_report_leaves_the_market_section_for_the_verdict() -> None:
    report = copy.deepcopy(REPORT)
    plan = Plan(blocks=10, duration=300.0, tasks=2, cheaters=1, roles=[])
    _print_report(report)
    assert report == REPORT
    assert _problem(report, plan) is None


def test_a_task_that_did_not_end_is_a_problem() -> None:
    report = copy.deepcopy(REPORT)
    report["market"]["settled"] = 1  # type: ignore[index]
    plan = Plan(blocks=10, duration=300.0, tasks=2, cheaters=1, roles=[])
    assert "1 of 2 tasks ended" in (_problem(report, plan) or "")


def test_private_swarm_tasks_are_private_and_the_report_shows_their_key_holders(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.output import stdout

    monkeypatch.setattr(stdout, "width", 200)  # the test's terminal would squeeze the columns
    plan = Plan(blocks=10, duration=300.0, tasks=2, cheaters=1, roles=[], private=True)
    assert [d.get("private") for d in plan.docs] == [True, True]
    public = Plan(blocks=10, duration=300.0, tasks=2, cheaters=1, roles=[])
    assert all("private" not in d for d in public.docs)
    from cli.task_spec import build_task

    built = build_task(plan.docs[0], Path("."))  # what `submit_tasks` sends: a private SubmitTask
    assert built.content_key is not None and built.submit.key_commit
    report = copy.deepcopy(REPORT)
    for row in report["market"]["tasks"]:  # type: ignore[index, union-attr]
        row.update(private=True, key_holders=4)
    _print_report(report)
    out = capsys.readouterr().out
    assert "private" in out and "key holders" in out
    rows = [line for line in out.splitlines() if line.startswith(("│ a ", "│ b "))]
    assert len(rows) == 2 and all("True" in r and " 4 " in r for r in rows), out


def test_private_without_tasks_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["swarm", "up", "--private", "--dir", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "--private" in result.output and "--tasks" in result.output
