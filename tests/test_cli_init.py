"""`polnet init` and the errors every bad argument, file or config gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from node.config import load_config
from node.daemon.chain import genesis_bytes
from node.daemon.keyfile import load_key_file
from node.datadir import DataDir
from protocol.identity import Keypair

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout + result.stderr


def test_init_creates_key_config_and_genesis_that_load_back(tmp_path: Path) -> None:
    root = tmp_path / "n"
    code, out = invoke("init", "-d", str(root), "--port", "4100", "--chain-id", "testnet-7", "--threads", "2")
    assert code == 0, out
    dd = DataDir(root)
    cfg = load_config(dd.config)
    assert (cfg.chain_id, cfg.network.listen_port, cfg.compute.threads) == ("testnet-7", 4100, 2)
    key = load_key_file(dd.node_key)
    assert key.node_id in out
    assert json.loads(dd.genesis.read_text())["chain_id"] == "testnet-7"
    assert dd.node_key.stat().st_mode & 0o077 == 0
    assert dd.keys.stat().st_mode & 0o077 == 0


def test_init_refuses_to_overwrite_an_existing_node(tmp_path: Path) -> None:
    root = tmp_path / "n"
    assert invoke("init", "-d", str(root))[0] == 0
    key_before = (root / "keys" / "node.key").read_bytes()
    code, out = invoke("init", "-d", str(root))
    assert code == 2
    assert "already exists" in out
    assert (root / "keys" / "node.key").read_bytes() == key_before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--listen-host", "example.org"), "must be an IP address"),
        (("--bootstrap", "127.0.0.1:4001"), "is not a peer address"),
        (("--bootstrap", "/ip4/127.0.0.1/tcp/99999/p2p/12D3KooWxxxxxxxxxxxx"), "is not a peer address"),
        (("--chain-id", ""), "chain_id must be"),
        (("--chain-id", "x" * 65), "chain_id must be"),
    ],
)
def test_init_rejects_bad_values_with_a_message_naming_them(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    code, out = invoke("init", "-d", str(tmp_path / "n"), *args)
    assert code == 2, out
    assert expected in out
    assert not (tmp_path / "n" / "keys" / "node.key").exists()


@pytest.mark.parametrize(
    "args",
    [("--port", "70000"), ("--port", "-1"), ("--threads", "0"), ("--port", "abc"), ("--no-such-flag",)],
)
def test_init_rejects_out_of_range_or_unknown_options_as_usage_errors(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    code, _ = invoke("init", "-d", str(tmp_path / "n"), *args)
    assert code == 2


def test_init_with_missing_genesis_file_says_so(tmp_path: Path) -> None:
    code, out = invoke("init", "-d", str(tmp_path / "n"), "--genesis", str(tmp_path / "nope.json"))
    assert code == 2
    assert "no such file" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "genesis is not valid json"),
        ("[1, 2]", "must be a table/object"),
        (json.dumps({"chain_id": "polnet-devnet", "accounts": []}), "accounts must be a non-empty list"),
        (genesis_bytes("other-chain", [Keypair.derive("a")]).decode(), "genesis is for chain 'other-chain'"),
    ],
)
def test_init_rejects_a_bad_genesis_before_writing_anything(
    tmp_path: Path, content: str, expected: str
) -> None:
    gen = tmp_path / "genesis.json"
    gen.write_text(content)
    code, out = invoke("init", "-d", str(tmp_path / "n"), "--genesis", str(gen))
    assert code == 2
    assert expected in out
    assert not (tmp_path / "n").exists()


def test_init_on_a_path_that_is_a_file_fails_cleanly(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    code, out = invoke("init", "-d", str(f))
    assert code == 2
    assert "not a directory" in out


def test_an_encrypted_key_needs_its_passphrase_to_run(tmp_path: Path) -> None:
    root = tmp_path / "n"
    env = {"POLNET_KEY_PASSPHRASE": "correct horse"}
    code, out = invoke("init", "-d", str(root), "--encrypt", env=env)
    assert code == 0, out
    assert load_key_file(DataDir(root).node_key, "correct horse").node_id in out
    code, out = invoke("wallet", "balance", "-d", str(root), env={"POLNET_KEY_PASSPHRASE": "wrong"})
    assert code == 2
    assert "node.key" in out
