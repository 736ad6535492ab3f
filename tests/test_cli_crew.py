"""`polnet crew run` (cli/crew_cmd.py, protocol/pol/crew_spec.py): a crew task file is checked key by
key with one clear error line (exit 2); a run trains with a local crew, shows every
member's progress and convicts exactly the member told to cheat."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from protocol.errors import ConfigError
from protocol.pol.crew_spec import crew_settings

runner = CliRunner()
TINY = """
stages = 2
data_parallel = 2
epochs = 2
n_train = 16
n_val = 8
micro_batch = 2
micro_batches = 2
bits = 2
segment_steps = 1

[model]
blocks = 2
width = 16
heads = 2
context = 16
"""


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(("doc", "says"), [
    ({"stagse": 2}, "unknown key(s): stagse"),
    ({"stages": 0}, "stages must be an integer in 1..16"),
    ({"stages": 8, "data_parallel": 4}, "at most 16 members"),
    ({"bits": 5}, "bits must be one of 2, 3, 4, 8"),
    ({"grad_bits": True}, "grad_bits must be one of"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"n_train": 10}, "multiple of the batch"),
    ({"model": {"width": 30, "heads": 4}}, "multiple of model.heads"),
    ({"stages": 8, "model": {"blocks": 4}}, "cannot be cut into 8 stages"),
    ({"model": {"depth": 3}}, "unknown model key(s): depth"),
    ({"links": {"mbit": 0}}, "mbit must be a number"),
    ({"links": 3}, "[links] must be a table"),
])
def test_a_bad_crew_task_value_is_refused_by_name(doc: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        crew_settings(doc)
    assert says in str(err.value)


def test_a_crew_task_file_defaults_what_it_leaves_out() -> None:
    s = crew_settings({"bits": "fp32", "links": {"delay_ms": 50}})
    assert s.crew["bits"] is None and s.crew["stages"] == 4 and s.model["blocks"] == 4
    assert (s.delay_ms, s.mbit) == (50.0, 1000.0)


def test_the_cli_refuses_a_bad_file_or_cheat_in_one_line_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("stages = [")
    code, _, err = invoke("crew", "run", str(bad))
    assert code == 2 and "not TOML" in err and "Traceback" not in err
    good = tmp_path / "crew.toml"
    good.write_text(TINY)
    code, _, err = invoke("crew", "run", str(good), "--cheat", "9:noisy")
    assert code == 2 and "rank 9 is not a member" in err
    code, _, err = invoke("crew", "run", str(good), "--cheat", "2:data_order")
    assert code == 2 and "not of member 2" in err
    code, _, err = invoke("crew", "run", str(good), "--liar", "0:3:1")
    assert code == 2 and "never exchange messages" in err


@pytest.mark.slow
@pytest.mark.integration
def test_a_crew_run_reports_every_member_and_convicts_only_the_cheater(tmp_path: Path) -> None:
    task = tmp_path / "crew.toml"
    task.write_text(TINY)
    code, out, err = invoke("crew", "run", str(task), "--cheat", "3:lazy_backward", "--json",
                            "--proofs", str(tmp_path / "proofs"))
    assert code == 0, err
    report = json.loads(out)
    assert report["convicted"] == [3]
    assert [m["verdict"] == "ok" for m in report["members"]] == [True, True, True, False]
    assert all(m["sent_bytes"] > 0 for m in report["members"])
    assert "4/4" in err  # the live progress showed every member at its last step
    assert (tmp_path / "proofs" / "rank-3" / "state-4").exists()  # kept where asked
