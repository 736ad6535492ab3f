"""An operator submits, inspects and cancels tasks on a real daemon process: nothing it
accepts is dropped, what the ledger would refuse is refused up front, and a task nobody
can take says why and can be withdrawn."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from node.config import RolesConfig
from tests.daemon_harness import loopback_config, make_node, start, stop, wait_ready

pytestmark = pytest.mark.integration
runner = CliRunner()
SPEC = ('dataset = "synthetic"\nhidden = [8]\nsteps = 64\ncheckpoint_interval = 1\n'
        'max_price_per_gflop = {price}\n[synthetic]\nsamples = 64\nfeatures = 4\nclasses = 3\n')


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout + result.stderr


def _wait(fn: object, timeout: float = 60.0) -> object:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()  # type: ignore[operator]
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError("timed out")


@pytest.mark.timeout(300)
def test_a_task_below_the_floor_is_refused_and_an_unplaceable_one_says_why_and_is_cancelled(
    tmp_path: Path,
) -> None:
    cfg = dataclasses.replace(loopback_config(), roles=RolesConfig(validator=True))
    dd = make_node(tmp_path / "n", cfg)
    proc = start(dd)
    try:
        wait_ready(dd, proc)
        cheap = tmp_path / "cheap.toml"
        cheap.write_text(SPEC.format(price=5))
        code, out = cli("task", "submit", str(cheap), "-d", str(dd.root))
        assert code == 2 and "below the floor" in out, out  # refused, not "submitted"

        good = tmp_path / "good.toml"
        good.write_text(SPEC.format(price=120))
        code, out = cli("task", "submit", str(good), "-d", str(dd.root), "--json")
        assert code == 0, out
        tid = json.loads(out[out.index("{"):])["task_id"]

        def placed_doc() -> dict | None:  # type: ignore[type-arg]
            code, out = cli("task", "status", tid, "-d", str(dd.root), "--json")
            doc = json.loads(out[out.index("{"):]) if code == 0 else None
            return doc if doc is not None and doc.get("status") == "OPEN" else None

        doc = _wait(placed_doc)
        assert isinstance(doc, dict) and "no registered worker" in doc["why_not_placed"], doc
        code, out = cli("task", "status", tid, "-d", str(dd.root))
        assert code == 0 and "why_not_placed" in out and "no registered worker" in out

        code, out = cli("task", "cancel", tid, "-d", str(dd.root), "--json")
        assert code == 0, out

        def refunded() -> bool:
            code, out = cli("task", "status", tid, "-d", str(dd.root), "--json")
            return code == 0 and json.loads(out[out.index("{"):])["status"] == "REFUNDED"

        _wait(refunded)
        code, out = cli("task", "cancel", tid, "-d", str(dd.root))
        assert code != 0 and "needs OPEN" in out, out  # a second cancel is refused
    finally:
        assert stop(proc) == 0
