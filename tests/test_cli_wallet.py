"""The wallet against a real one-node chain: signed transactions commit, balances move,
refusals come back with the ledger's reason, and junk on the admin port harms nothing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from node.config import ChainConfig
from node.datadir import DataDir
from protocol.identity import Keypair
from tests.daemon_harness import loopback_config, make_node, start, status, stop, wait_ready

runner = CliRunner()
OTHER = Keypair.derive("wallet-test-recipient")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DataDir, dict[str, Any]]]:
    cfg = dataclasses.replace(loopback_config(), chain=ChainConfig(block_interval_ms=100))
    dd = make_node(tmp_path_factory.mktemp("wallet") / "n", cfg)
    proc: subprocess.Popen[bytes] = start(dd)
    try:
        yield dd, wait_ready(dd, proc)
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wallet(dd: DataDir, *args: str) -> tuple[int, str]:
    extra = ["--json"] if args[0] in ("balance", "stake") else []
    result = runner.invoke(app, ["wallet", *args, "-d", str(dd.root), *extra])
    return result.exit_code, result.stdout + result.stderr


def account(dd: DataDir, *args: str) -> dict[str, Any]:
    code, out = wallet(dd, "balance", *args)
    assert code == 0, out
    doc: dict[str, Any] = json.loads(out)
    return doc


def wait_nonce(dd: DataDir, nonce: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = account(dd)
        if doc["nonce"] >= nonce:
            return doc
        time.sleep(0.2)
    raise AssertionError(f"nonce {nonce} not reached")


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_transfer_and_bond_commit_and_move_funds(running: tuple[DataDir, dict[str, Any]]) -> None:
    dd, _ = running
    before = account(dd)
    assert wallet(dd, "transfer", OTHER.node_id, "1234")[0] == 0
    assert wallet(dd, "bond", "500", "--nonce", str(before["nonce"] + 1))[0] == 0
    after = wait_nonce(dd, before["nonce"] + 2)
    assert account(dd, OTHER.public.hex())["balance"] == 1234
    assert after["bonded"] == before["bonded"] + 500
    # The node pays fees to the proposer (itself here): only the amounts have left.
    assert after["balance"] <= before["balance"] - 1234 - 500 + 2 * 10


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_refused_transactions_come_back_with_the_ledger_reason(
    running: tuple[DataDir, dict[str, Any]],
) -> None:
    dd, _ = running
    code, out = wallet(dd, "unbond", str(10**15))
    assert code == 2
    assert "InsufficientStake" in out
    code, out = wallet(dd, "transfer", OTHER.node_id, "1", "--nonce", "0")
    assert code == 2
    assert "NonceError" in out


def post(url: str, data: bytes) -> int:
    req = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_junk_on_the_admin_endpoint_is_refused_and_the_node_goes_on(
    running: tuple[DataDir, dict[str, Any]],
) -> None:
    _dd, ep = running
    h0 = status(ep)["height"]
    assert post(ep["admin"] + "/tx", b"\x93garbage") == 400
    assert post(ep["admin"] + "/tx", b"\x00" * (3 * 1024 * 1024)) == 413
    assert post(ep["admin"] + "/nowhere", b"") == 404
    assert post(ep["admin"] + "/status", b"") == 405
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(ep["admin"] + "/block/notanumber", timeout=10)
    deadline = time.monotonic() + 30
    while status(ep)["height"] <= h0 + 2:
        assert time.monotonic() < deadline, "the chain stopped after junk input"
        time.sleep(0.2)
