"""The stage table owns the task lifecycle: which txs each status accepts, which moves
exist, who may write a status, and what docs/market.md says about it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from protocol.market.errors import IllegalTransition, WrongStage
from protocol.market.process import MARKET_TX_TYPES
from protocol.market.stages import STAGES, enter, registered_steps, task_for
from protocol.market.state import TERMINAL, MarketState, Status, Task
from protocol.market.txs import (
    CommitLinks,
    DeregisterWorker,
    DeviceClass,
    RegisterWorker,
    SetEncKey,
    SubmitTask,
)

REPO = Path(__file__).resolve().parent.parent
#: Transactions that do not name a task (they create one, or are about a worker).
NOT_TASK_TXS = (RegisterWorker, DeregisterWorker, SubmitTask, SetEncKey, CommitLinks)
TASK_TXS = [t for t in MARKET_TX_TYPES if t not in NOT_TASK_TXS]


def _task(status: Status) -> Task:
    return Task(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 1, 640, 10, 8, DeviceClass.CPU, 0, True, 40, 1, 0,
                status=status)


def _tx(cls: type) -> object:
    """An instance of a task tx naming task 0x01.. (other fields are never read by the gate)."""
    fields = cls.__dataclass_fields__
    return cls(**{name: (b"\x01" * 32 if name == "task_id" else None) for name in fields})


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("tx_type", TASK_TXS, ids=lambda t: t.__name__)
def test_every_status_accepts_exactly_the_txs_its_stage_lists(status: Status, tx_type: type) -> None:
    state = MarketState()
    state.tasks[b"\x01" * 32] = _task(status)
    tx = _tx(tx_type)
    if tx_type in STAGES[status].accepts:
        assert task_for(state, b"\x01" * 32, tx) is state.tasks[b"\x01" * 32]
    else:
        with pytest.raises(WrongStage):
            task_for(state, b"\x01" * 32, tx)


def test_every_task_tx_is_accepted_by_some_status() -> None:
    accepted = {t for stage in STAGES.values() for t in stage.accepts}
    assert accepted == set(TASK_TXS)


@pytest.mark.parametrize("status", list(Status))
def test_enter_allows_the_table_edges_and_refuses_every_other(status: Status) -> None:
    state = MarketState(height=7)
    for target in Status:
        task = _task(status)
        if target in STAGES[status].successors:
            enter(state, task, target, 3)
            assert (task.status, task.stage_since, task.deadline) == (target, 7, 10)
        else:
            with pytest.raises(IllegalTransition):
                enter(state, task, target, 3)


def test_terminal_statuses_have_no_way_out_and_every_other_one_has_a_block_step() -> None:
    import protocol.market.blocks  # noqa: F401  (registers the block steps)

    assert {s for s, stage in STAGES.items() if not stage.successors} == TERMINAL
    assert set(registered_steps()) == set(Status) - TERMINAL


def _status_writers(path: Path) -> list[int]:
    """Lines of `path` that assign an attribute named `status` (tasks' only writable state
    the table owns)."""
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
        lines += [t.lineno for t in targets if isinstance(t, ast.Attribute) and t.attr == "status"]
    return lines


def test_no_module_but_stages_writes_a_task_status() -> None:
    writers = {str(p.relative_to(REPO)): _status_writers(p)
               for p in (REPO / "protocol").rglob("*.py")}
    found = {p: lines for p, lines in writers.items() if lines and p != "protocol/market/stages.py"}
    assert found == {}, f"status written outside protocol/market/stages.py: {found}"
    assert writers["protocol/market/stages.py"], "stages.py must be the writer"


def test_the_documented_stage_table_matches_the_code() -> None:
    text = (REPO / "docs" / "market.md").read_text()
    section = text[text.index("## Stages and deadlines"):]
    rows = re.findall(r"^\| ([A-Z_]+) \|(.*)$", section, re.M)
    documented = {name: rest for name, rest in rows if name in Status.__members__}
    assert set(documented) == {s.name for s in Status if s not in TERMINAL}
    for name, rest in documented.items():
        window = STAGES[Status[name]].window
        if window is not None:
            assert f"`{window}`" in rest, f"docs/market.md's {name} row should name `{window}`"
