"""A network built the way operators build one: `polnet init` per node, then the genesis
ceremony (new, add-account, gentx per validator signed by its key, collect, verify,
install), then four daemons as separate processes commit blocks; a node started with
another genesis under the same chain id is refused, with both hashes named."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from node.config import config_to_toml, load_config, with_overrides
from node.daemon.keyfile import load_key_file
from node.datadir import DataDir
from node.ports import free_ports
from tests.daemon_harness import get, log_tail, start, status, wait_ready
from tests.test_daemon_network import wait_until

CHAIN = "ceremony-itest"
VALIDATORS = 4
STAKE = 10_000_000
#: Five processes importing torch and libp2p on 2 shared cores.
READY_TIMEOUT_S = 150.0
PROGRESS_TIMEOUT_S = 120.0

runner = CliRunner()


def polnet(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stdout + result.stderr
    return result.stdout


def _init(root: Path, port: int) -> DataDir:
    polnet(
        "init",
        "-d",
        str(root),
        "--chain-id",
        CHAIN,
        "--listen-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--admin-port",
        "0",
        "--metrics-port",
        "0",
    )
    return DataDir(root)


def _ceremony(tmp: Path, dirs: list[DataDir]) -> tuple[Path, str]:
    genesis = tmp / "genesis.json"
    polnet("genesis", "new", str(genesis), "--chain-id", CHAIN, "--preset", "local")
    for dd in dirs:
        polnet("genesis", "add-account", str(genesis), load_key_file(dd.node_key).node_id, str(100 * STAKE))
    for dd in dirs:  # on each validator's machine, with its own key
        polnet("genesis", "gentx", str(genesis), "-d", str(dd.root), "--stake", str(STAKE))
    polnet("genesis", "collect", str(genesis), *(str(dd.root / "gentx.json") for dd in dirs))
    summary = json.loads(polnet("genesis", "verify", str(genesis), "--json"))
    assert len(summary["validators"]) == VALIDATORS
    for dd in dirs:
        polnet("genesis", "install", str(genesis), "-d", str(dd.root), "--set-bootstrap")
    return genesis, str(summary["genesis_hash"])


def _block_hash(ep: dict[str, Any], height: int) -> str:
    return str(json.loads(get(f"{ep['admin']}/block/{height}"))["hash"])


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_network_from_the_genesis_ceremony_commits_and_refuses_another_genesis(tmp_path: Path) -> None:
    ports = free_ports(VALIDATORS + 1)
    dirs = [_init(tmp_path / f"v{i}", ports[i]) for i in range(VALIDATORS)]
    _, ours = _ceremony(tmp_path, dirs)
    # A stranger: same chain id, its own one-node genesis from init, bootstrapped to v0.
    stranger = _init(tmp_path / "stranger", ports[VALIDATORS])
    v0 = f"/ip4/127.0.0.1/tcp/{ports[0]}/p2p/{load_key_file(dirs[0].node_key).node_id}"
    cfg = with_overrides(load_config(stranger.config, {}), network={"bootstrap": (v0,)})
    stranger.config.write_text(config_to_toml(cfg))
    theirs = json.loads(polnet("genesis", "verify", str(stranger.genesis), "--json"))["genesis_hash"]
    assert theirs != ours

    procs: list[subprocess.Popen[bytes]] = [start(d) for d in dirs]
    try:
        eps = [wait_ready(d, p, READY_TIMEOUT_S) for d, p in zip(dirs, procs, strict=True)]
        wait_until(
            lambda: min(status(ep)["height"] for ep in eps) >= 3,
            PROGRESS_TIMEOUT_S,
            "every validator at height 3",
        )
        docs = [status(ep) for ep in eps]
        assert all(d["chain"]["genesis_hash"] == ours for d in docs)
        assert all(d["peers"] == VALIDATORS - 1 for d in docs)
        common = min(d["height"] for d in docs)
        assert len({_block_hash(ep, common) for ep in eps}) == 1

        procs.append(start(stranger))
        stranger_ep = wait_ready(stranger, procs[-1], READY_TIMEOUT_S)
        refusal = re.compile(r"refusing peer: different genesis: peer has (\w{64}), this node has (\w{64})")

        def refused() -> bool:
            text = log_tail(dirs[0], 200_000) + log_tail(stranger, 200_000)
            return any({m.group(1), m.group(2)} == {ours, theirs} for m in refusal.finditer(text))

        wait_until(refused, PROGRESS_TIMEOUT_S, "the stranger refused with both genesis hashes named")
        time.sleep(3)  # the refused connection is dropped and not redialed (the peer is banned)
        assert status(stranger_ep)["peers"] == 0
        assert status(eps[0])["peers"] == VALIDATORS - 1
        before = status(eps[0])["height"]
        wait_until(lambda: status(eps[0])["height"] >= before + 2, PROGRESS_TIMEOUT_S, "the network going on")

        # `polnet node status` says where the node is, in words.
        text = polnet("node", "status", "-d", str(dirs[0].root))
        assert f"(genesis {ours[:16]}, preset local)" in text
        assert "last block" in text and "round" in text and "catching up" in text
        assert "registration" in text and "off: [roles] worker and verifier are false" in text
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
