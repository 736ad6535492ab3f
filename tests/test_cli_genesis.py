"""`polnet genesis`: the ceremony through the CLI, and every bad input refused with one
line naming the value and exit status 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from node.config import NetworkConfig, load_config
from node.daemon.chain import Chain, genesis_bytes, read_genesis
from node.daemon.keyfile import load_key_file
from node.daemon.layout import init_datadir
from node.datadir import DataDir
from tests.daemon_harness import loopback_config

runner = CliRunner()
CHAIN = "cli-genesis"
STAKE = 10_000_000


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout + result.stderr


def _nodes(tmp: Path, n: int) -> list[DataDir]:
    dirs = []
    for i in range(n):
        cfg = dataclasses.replace(loopback_config(CHAIN), network=NetworkConfig("127.0.0.1", 23500 + i))
        init_datadir(tmp / f"n{i}", cfg)
        dirs.append(DataDir(tmp / f"n{i}"))
    return dirs


def _node_id(dd: DataDir) -> str:
    return load_key_file(dd.node_key).node_id


def _ceremony(tmp: Path, dirs: list[DataDir]) -> Path:
    draft = tmp / "genesis.json"
    assert (
        invoke("genesis", "new", str(draft), "--chain-id", CHAIN, "--set", "market.reveal_blocks=12")[0] == 0
    )
    for dd in dirs:
        code, out = invoke("genesis", "add-account", str(draft), _node_id(dd), str(2 * STAKE))
        assert code == 0, out
    for dd in dirs:
        code, out = invoke("genesis", "gentx", str(draft), "-d", str(dd.root), "--stake", str(STAKE))
        assert code == 0, out
    code, out = invoke("genesis", "collect", str(draft), *(str(dd.root / "gentx.json") for dd in dirs))
    assert code == 0, out
    return draft


def test_the_ceremony_through_the_cli_gives_one_genesis_every_node_accepts(tmp_path: Path) -> None:
    dirs = _nodes(tmp_path, 3)
    final = _ceremony(tmp_path, dirs)
    code, out = invoke("genesis", "verify", str(final), "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["changed_from_preset"] == {"market.reveal_blocks": 12}
    assert [v["node_id"] for v in summary["validators"]] == [_node_id(d) for d in dirs]
    # Addresses came from each node's config; install points each at the others.
    assert summary["validators"][1]["address"] == f"/ip4/127.0.0.1/tcp/23501/p2p/{_node_id(dirs[1])}"
    for dd in dirs:
        code, out = invoke("genesis", "install", str(final), "-d", str(dd.root), "--set-bootstrap")
        assert code == 0, out
        assert read_genesis(dd.genesis).hash().hex() == summary["genesis_hash"]
        boot = load_config(dd.config, {}).network.bootstrap
        assert len(boot) == 2 and not any(_node_id(dd) in b for b in boot)


def test_install_refuses_a_database_of_another_genesis_unless_told(tmp_path: Path) -> None:
    dirs = _nodes(tmp_path, 2)
    # The node ran its one-node genesis from init: its database belongs to that one.
    Chain.open(
        read_genesis(dirs[0].genesis), load_key_file(dirs[0].node_key), dirs[0].chain_db, 0
    ).store.close()
    final = _ceremony(tmp_path, dirs)
    code, out = invoke("genesis", "install", str(final), "-d", str(dirs[0].root))
    assert code == 2
    assert "chain.sqlite: holds the chain of genesis" in out and "--reset-db" in out
    code, out = invoke("genesis", "install", str(final), "-d", str(dirs[0].root), "--reset-db")
    assert code == 0 and "moved the old chain database" in out
    assert not dirs[0].chain_db.exists()


def _one_error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "testnet"], "unknown preset 'testnet'"),
        (["--set", "market.reveal_block=3"], "unknown market parameter market.reveal_block; did you mean"),
        (["--set", "market.reveal_blocks=soon"], "'soon' is not an integer"),
        (["--set", "economy.x=1"], "unknown section 'economy'"),
        (["--set", "consensus.timeout_max_ms=1"], "consensus.timeout_max_ms 1 is below a base timeout"),
    ],
)
def test_genesis_new_refuses_bad_parameters_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, out = invoke("genesis", "new", str(tmp_path / "g.json"), "--chain-id", CHAIN, *args)
    assert code == 2
    assert message in _one_error_line(out)
    assert not (tmp_path / "g.json").exists()


def test_verify_names_a_bad_genesis_field_with_exit_2(tmp_path: Path) -> None:
    dirs = _nodes(tmp_path, 1)
    doc = json.loads(dirs[0].genesis.read_text())
    doc["market"] = {"reveal_blockz": 3}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, out = invoke("genesis", "verify", str(bad))
    assert code == 2
    assert "bad.json: unknown market parameter market.reveal_blockz" in _one_error_line(out)


def test_collect_refuses_a_gentx_of_another_chain_with_exit_2(tmp_path: Path) -> None:
    dirs = _nodes(tmp_path, 1)
    draft = tmp_path / "g.json"
    invoke("genesis", "new", str(draft), "--chain-id", CHAIN)
    invoke("genesis", "add-account", str(draft), _node_id(dirs[0]), str(2 * STAKE))
    other = tmp_path / "other.json"
    invoke("genesis", "new", str(other), "--chain-id", "elsewhere")
    invoke("genesis", "add-account", str(other), _node_id(dirs[0]), str(2 * STAKE))
    invoke("genesis", "gentx", str(other), "-d", str(dirs[0].root), "--stake", str(STAKE))
    code, out = invoke("genesis", "collect", str(draft), str(dirs[0].root / "gentx.json"))
    assert code == 2
    assert "not a valid signed gentx for chain 'cli-genesis'" in _one_error_line(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add-account", "{draft}", "12D3KooWnotanid", "5"], "is not an account"),
        (["add-account", "{draft}", "{node}", "0"], "greater than or equal to 1"),
        (["gentx", "{draft}", "-d", "{dir}", "--stake", "50"], "no genesis account for this node"),
        (["new", "{draft}", "--chain-id", CHAIN], "already exists"),
        (["verify", "{missing}"], "genesis file not found"),
        (["install", "{draft}", "-d", "{dir}"], "accounts must be a non-empty list"),
    ],
)
def test_every_genesis_command_names_the_bad_value_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    dirs = _nodes(tmp_path, 1)
    draft = tmp_path / "g.json"
    invoke("genesis", "new", str(draft), "--chain-id", CHAIN)
    values = {
        "draft": str(draft),
        "dir": str(dirs[0].root),
        "node": _node_id(dirs[0]),
        "missing": str(tmp_path / "none.json"),
    }
    code, out = invoke("genesis", *(a.format(**values) for a in args))
    assert code == 2
    assert message in out


def test_node_run_refuses_an_unknown_preset_in_its_genesis_with_exit_2(tmp_path: Path) -> None:
    dirs = _nodes(tmp_path, 1)
    doc = json.loads(genesis_bytes(CHAIN, [load_key_file(dirs[0].node_key)]))
    doc["preset"] = "moonnet"
    dirs[0].genesis.write_text(json.dumps(doc))
    code, out = invoke("node", "run", "-d", str(dirs[0].root))
    assert code == 2
    assert "genesis.json: unknown preset 'moonnet'" in _one_error_line(out)
