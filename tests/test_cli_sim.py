import json

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["sim", *args])
    return result.exit_code, result.output


def test_sim_run_is_a_pure_function_of_seed_and_config() -> None:
    code_a, out_a = _run("run", "--scenario", "toy.flood", "--seed", "7", "--json")
    code_b, out_b = _run("run", "--scenario", "toy.flood", "--seed", "7", "--json")
    code_c, out_c = _run("run", "--scenario", "toy.flood", "--seed", "8", "--json")
    assert code_a == code_b == code_c == 0
    hash_a = json.loads(out_a.strip().splitlines()[-1])["trace_hash"]
    assert hash_a == json.loads(out_b.strip().splitlines()[-1])["trace_hash"]
    assert hash_a != json.loads(out_c.strip().splitlines()[-1])["trace_hash"]


def test_sim_run_accepts_inline_json_config_as_failures_print_it() -> None:
    code, out = _run("run", "--config", '{"nodes": 6, "scenario": "toy.flood", "seed": 2}', "--json")
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1])["nodes"] == 6


def test_sim_run_reads_toml_config_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sim.toml"
    path.write_text('scenario = "toy.flood"\nnodes = 5\nseed = 4\n')
    code, out = _run("run", "--config", str(path), "--json")
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1])["seed"] == 4


def test_sim_run_rejects_bad_configs_with_a_named_field_and_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert _run("run", "--config", str(tmp_path / "missing.toml"))[0] == 2
    code, out = _run("run", "--scenario", "toy.flood", "--config", '{"nodes": 0}')
    assert code == 2 and "nodes" in out
    code, out = _run("run", "--scenario", "no.such.scenario")
    assert code == 2 and "unknown" in out
    code, out = _run("run", "--scenario", "toy.flood", "--config", '{"bogus_key": 1}')
    assert code == 2 and "bogus_key" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("nodes = [unclosed")
    assert _run("run", "--config", str(bad))[0] == 2


def test_sim_list_names_the_registered_scenarios() -> None:
    code, out = _run("list")
    assert code == 0 and "toy.flood" in out.split()
