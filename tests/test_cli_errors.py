"""Every node/wallet/swarm command fails with one clear line for a bad argument, file
or state (no traceback), checked through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from node.daemon.chain import genesis_bytes
from node.daemon.keyfile import load_key_file
from node.daemon.layout import init_datadir
from node.datadir import DataDir
from tests.daemon_harness import loopback_config

runner = CliRunner()
PEER_ID = "12D3KooWSKHda9UXCBDCD999Utg8HqUde3k12agKEZ2kfnzSP1Cg"


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture
def node_dir(tmp_path: Path) -> DataDir:
    init_datadir(tmp_path / "n", loopback_config())
    return DataDir(tmp_path / "n")


def test_node_run_on_a_missing_data_dir_says_how_to_create_one(tmp_path: Path) -> None:
    code, out = invoke("node", "run", "-d", str(tmp_path / "none"))
    assert code == 2
    assert "data directory not found" in out and "polnet init" in out


def test_node_run_names_the_bad_key_in_the_config(node_dir: DataDir) -> None:
    node_dir.config.write_text(node_dir.config.read_text().replace("listen_port", "lisen_port"))
    code, out = invoke("node", "run", "-d", str(node_dir.root))
    assert code == 2
    assert "did you mean 'listen_port'" in out


def test_node_run_with_a_corrupt_key_file_fails_before_starting(node_dir: DataDir) -> None:
    node_dir.node_key.write_text("garbage")
    code, out = invoke("node", "run", "-d", str(node_dir.root))
    assert code == 2
    assert "node.key" in out


def test_node_run_with_a_genesis_for_another_chain_is_refused(node_dir: DataDir) -> None:
    node_dir.genesis.write_bytes(genesis_bytes("elsewhere", [load_key_file(node_dir.node_key)]))
    code, out = invoke("node", "run", "-d", str(node_dir.root))
    assert code == 2
    assert "genesis is for chain 'elsewhere'" in out


def test_node_run_with_a_missing_key_says_which_file(node_dir: DataDir) -> None:
    node_dir.node_key.unlink()
    code, out = invoke("node", "run", "-d", str(node_dir.root))
    assert code == 2
    assert "node.key: missing" in out


def test_status_of_a_node_that_is_not_running_says_so(node_dir: DataDir) -> None:
    code, out = invoke("node", "status", "-d", str(node_dir.root))
    assert code == 1
    assert "no running node" in out


def test_status_with_a_stale_endpoints_file_says_unreachable(node_dir: DataDir) -> None:
    node_dir.write_endpoints({"admin": "http://127.0.0.1:1", "pid": 1})
    code, out = invoke("node", "status", "-d", str(node_dir.root))
    assert code == 1
    assert "not reachable" in out


def test_status_with_a_corrupt_endpoints_file_says_corrupt(node_dir: DataDir) -> None:
    node_dir.endpoints.write_text("{{{")
    code, out = invoke("node", "status", "-d", str(node_dir.root))
    assert code == 2
    assert "corrupt endpoints file" in out


def test_status_refuses_a_non_local_admin_endpoint(node_dir: DataDir) -> None:
    node_dir.write_endpoints({"admin": "http://10.0.0.1:9465"})
    code, out = invoke("node", "status", "-d", str(node_dir.root))
    assert code == 2
    assert "no local admin endpoint" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("transfer", "nothex", "5"), "is not an account"),
        (("transfer", "ab" * 31, "5"), "is not an account"),
        (("balance", "12D3KooWnotanid"), "is not an account"),
    ],
)
def test_wallet_rejects_bad_accounts(node_dir: DataDir, args: tuple[str, ...], expected: str) -> None:
    code, out = invoke("wallet", *args, "-d", str(node_dir.root))
    assert code == 2
    assert expected in out


@pytest.mark.parametrize(
    "args",
    [
        ("transfer", PEER_ID, "0"),
        ("transfer", PEER_ID, "-3"),
        ("transfer", PEER_ID, str(2**64)),
        ("bond", "abc"),
        ("unbond", "0"),
        ("bond", "5", "--fee", "-1"),
        ("transfer", PEER_ID),
    ],
)
def test_wallet_rejects_bad_amounts_as_usage_errors(node_dir: DataDir, args: tuple[str, ...]) -> None:
    code, _ = invoke("wallet", *args, "-d", str(node_dir.root))
    assert code == 2


def test_wallet_without_a_running_node_says_so(node_dir: DataDir) -> None:
    code, out = invoke("wallet", "bond", "5", "-d", str(node_dir.root))
    assert code == 1
    assert "no running node" in out


def test_wallet_with_a_missing_key_file_names_it(node_dir: DataDir, tmp_path: Path) -> None:
    code, out = invoke("wallet", "balance", "-d", str(node_dir.root), "--key", str(tmp_path / "k"))
    assert code == 2
    assert str(tmp_path / "k") in out


@pytest.mark.parametrize(
    "args", [("--nodes", "0"), ("--nodes", "65"), ("--blocks", "0"), ("--duration", "0")]
)
def test_swarm_rejects_out_of_range_sizes(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, _ = invoke("swarm", "up", "--dir", str(tmp_path / "s"), *args)
    assert code == 2


def test_swarm_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "something").write_text("x")
    code, out = invoke("swarm", "up", "--dir", str(tmp_path / "s"), "--nodes", "2")
    assert code == 2
    assert "not empty" in out


def test_node_run_with_a_corrupt_chain_database_names_it_and_stops_cleanly(node_dir: DataDir) -> None:
    node_dir.chain_db.write_bytes(b"this is not sqlite" * 100)
    code, out = invoke("node", "run", "-d", str(node_dir.root))
    assert code == 1
    assert "chain.sqlite: chain database unreadable" in out
    assert not node_dir.endpoints.exists()
