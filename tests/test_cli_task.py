"""`polnet task`: bad spec files, bad ids and bad output paths fail with one clear line;
a good spec becomes a valid TaskSpec priced from its FLOPs; swarm shapes are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.swarm_market import BAIT_PRICE, CHEAT_PRICE, HONEST_PRICE, swarm_roles, task_docs
from cli.task_spec import build_task, read_spec_file
from node.config import CHEATS
from node.daemon.layout import init_datadir
from protocol.chain_params import PRESETS
from protocol.errors import ConfigError
from protocol.pol.flops import estimate
from protocol.pol.spec import validate_spec
from protocol.records import record_hash
from tests.daemon_harness import loopback_config

runner = CliRunner()
GOOD = 'dataset = "synthetic"\nhidden = [8]\nsteps = 64\ncheckpoint_interval = 1\n' \
       '[synthetic]\nsamples = 64\nfeatures = 4\nclasses = 3\n'


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout + result.stderr


def spec_file(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_good_spec_builds_a_valid_task_priced_from_its_flops(tmp_path: Path) -> None:
    built = build_task(read_spec_file(spec_file(tmp_path, GOOD)), tmp_path)
    validate_spec(built.spec)
    assert built.submit.spec_hash == record_hash(built.spec)
    assert built.gflops == max(1, -(-estimate(built.spec).total // 10**9))
    assert built.submit.max_price_per_gflop >= PRESETS["local"].market.min_price_per_gflop
    assert (built.submit.steps, built.submit.checkpoint_interval) == (64, 1)


def test_the_same_spec_twice_is_two_tasks(tmp_path: Path) -> None:
    doc = read_spec_file(spec_file(tmp_path, GOOD))
    assert build_task(doc, tmp_path).submit.salt != build_task(doc, tmp_path).submit.salt


def test_a_json_spec_is_read_by_its_suffix(tmp_path: Path) -> None:
    doc = {"dataset": "synthetic", "steps": 64, "checkpoint_interval": 1, "synthetic": {"samples": 32}}
    built = build_task(read_spec_file(spec_file(tmp_path, json.dumps(doc), "t.json")), tmp_path)
    assert built.spec.steps == 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('dataset = "synthetic"\nstpes = 10\n', "unknown key 'stpes'"),
        ('hidden = [8]\n', "dataset is required"),
        ('dataset = "nope.safetensors"\n', "no such file"),
        ('dataset = "synthetic"\nsteps = 25\ncheckpoint_interval = 10\n', "multiple of checkpoint_interval"),
        ('dataset = "synthetic"\nsteps = 40\ncheckpoint_interval = 10\n', "must be at least 64"),
        ('dataset = "synthetic"\noptimizer = "lbfgs"\n', "optimizer must be one of"),
        ('dataset = "synthetic"\nlr = -1\n', "lr must be a number"),
        ('dataset = "synthetic"\nhidden = [0]\n', "hidden must be a list"),
        ('dataset = "synthetic"\nsteps = "many"\n', "steps must be an integer"),
        ('dataset = "synthetic"\n[synthetic]\nrows = 3\n', "unknown key 'rows' in [synthetic]"),
        ('dataset = [\n', "invalid TOML"),
    ],
)
def test_task_submit_names_what_is_wrong_with_the_spec(tmp_path: Path, text: str, message: str) -> None:
    code, out = invoke("task", "submit", str(spec_file(tmp_path, text)), "-d", str(tmp_path))
    assert code == 2
    assert message in out


def test_task_submit_of_a_missing_file_says_so(tmp_path: Path) -> None:
    code, out = invoke("task", "submit", str(tmp_path / "none.toml"), "-d", str(tmp_path))
    assert code == 2 and "spec file not found" in out


def test_task_submit_to_a_node_that_is_not_running_says_so(tmp_path: Path) -> None:
    init_datadir(tmp_path / "n", loopback_config())
    code, out = invoke("task", "submit", str(spec_file(tmp_path, GOOD)), "-d", str(tmp_path / "n"))
    assert code == 1
    assert "endpoints" in out or "not running" in out or "not reachable" in out


@pytest.mark.parametrize("command", ["status", "result"])
def test_a_malformed_task_id_is_refused_before_any_request(tmp_path: Path, command: str) -> None:
    extra = ["--out", str(tmp_path / "w.safetensors")] if command == "result" else []
    code, out = invoke("task", command, "not-a-task", "-d", str(tmp_path), *extra)
    assert code == 2 and "is not a task id" in out


def test_task_result_into_a_directory_is_refused(tmp_path: Path) -> None:
    init_datadir(tmp_path / "n", loopback_config())
    code, out = invoke("task", "result", "ab" * 32, "-d", str(tmp_path / "n"), "--out", str(tmp_path))
    assert code == 2 and "is a directory" in out


def test_task_result_requires_an_output_path() -> None:
    code, out = invoke("task", "result", "ab" * 32)
    assert code == 2 and "--out" in out


def test_swarm_roles_price_cheaters_below_the_bait_and_honest_workers_above() -> None:
    roles = swarm_roles(7, 2)
    assert roles[0].whistleblower and not roles[0].worker
    cheats = [r for r in roles if r.cheat]
    assert len(cheats) == 2 and all(r.cheat in CHEATS for r in cheats)
    assert all(r.worker_price == CHEAT_PRICE < BAIT_PRICE for r in cheats)
    assert all(r.worker_price == HONEST_PRICE > BAIT_PRICE for r in roles[1:] if not r.cheat)
    docs = task_docs(3, 2)
    assert docs[0]["max_price_per_gflop"] == BAIT_PRICE
    assert all(d["max_price_per_gflop"] > HONEST_PRICE for d in docs[1:])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "3", "--tasks", "1"], "at least 5 nodes"),
        (["--nodes", "6", "--tasks", "1", "--cheaters", "3"], "fewer than 3 honest workers"),
        (["--nodes", "6", "--cheaters", "1"], "need --tasks"),
        (["--nodes", "6", "--tasks", "1", "--false-challengers", "3"], "fewer than 3 honest workers"),
        (["--nodes", "6", "--tasks", "1", "--cheaters", "1", "--cheat", "bribery"], "is not an attack"),
    ],
)
def test_swarm_up_refuses_a_market_it_cannot_run(tmp_path: Path, args: list[str], message: str) -> None:
    code, out = invoke("swarm", "up", *args, "--dir", str(tmp_path / "s"))
    assert code == 2 and message in out
    assert not (tmp_path / "s").exists()


def test_a_cheat_name_outside_the_catalog_is_a_config_error() -> None:
    from node.compute.attacks import CATALOG
    from node.config import RolesConfig

    assert set(CHEATS) == {a.name for a in CATALOG if not a.honest}  # bisection cheats are compute modes
    with pytest.raises(ConfigError, match="cheat must be empty or one of"):
        RolesConfig(cheat="bribery").validate()
