"""The swarm's verdict is judged from its report after the report is printed."""

import copy

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
