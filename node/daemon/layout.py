"""Lay out data directories: one node (`polnet init`) or a local network of several
(`polnet swarm up`, the multi-process tests).

Init refuses to touch a data directory that already holds a key or a config: a node's
key is its identity and its stake, and overwriting it by re-running a setup script is
the one mistake an operator cannot undo.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from node.config import (
    AdminConfig,
    ChainConfig,
    MetricsConfig,
    NetworkConfig,
    NodeConfig,
    RolesConfig,
    config_to_toml,
)
from node.daemon import chain
from node.daemon.keyfile import create_key_file
from node.datadir import DataDir, write_atomic
from node.ports import free_ports
from protocol.errors import ConfigError
from protocol.identity import Keypair

#: Local networks are for development: a few dozen processes at most on one machine.
MAX_LOCALNET_NODES = 64


def init_datadir(
    root: Path,
    cfg: NodeConfig,
    *,
    passphrase: str | None = None,
    genesis: Path | None = None,
    seed: bytes | None = None,
) -> Keypair:
    """Create the tree, the key, config.toml and genesis (a one-node devnet by default)."""
    cfg.validate()
    datadir = DataDir(root)
    for existing in (datadir.config, datadir.node_key):
        if existing.exists():
            raise ConfigError(f"{existing}: already exists; this data dir is initialised (use another one)")
    if genesis is not None:
        chain.check_genesis_file(genesis, cfg.chain_id)
    datadir.create()
    key = create_key_file(datadir.node_key, passphrase=passphrase, seed=seed)
    if genesis is not None:
        shutil.copyfile(genesis, datadir.genesis)
    else:
        write_atomic(datadir.genesis, chain.genesis_bytes(cfg.chain_id, [key]), mode=0o644)
    write_atomic(datadir.config, config_to_toml(cfg).encode(), mode=0o600)
    return key


def layout_localnet(
    root: Path,
    n: int,
    chain_id: str = "polnet-local",
    block_interval_ms: int = 500,
    roles: list[RolesConfig] | None = None,
    bootstrap_one: bool = False,
) -> list[DataDir]:
    """n data dirs under `root` on 127.0.0.1: one genesis with every node a funded
    validator (each with its signed gentx, giving its address), fixed p2p ports, every
    node bootstrapping to all the others (so any one of them can die without
    partitioning the rest), or with `bootstrap_one` to one other only (node i to node
    i-1, node 0 to the last: a ring), as operators who are handed one address would:
    peer discovery has to find the rest."""
    if not 1 <= n <= MAX_LOCALNET_NODES:
        raise ConfigError(f"a local network has 1..{MAX_LOCALNET_NODES} nodes, got {n}")
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root}: not empty; a local network needs a fresh directory")
    root.mkdir(parents=True, exist_ok=True)
    seeds = [os.urandom(32) for _ in range(n)]
    keys = [Keypair.from_seed(s) for s in seeds]
    ports = free_ports(n)
    addrs = [f"/ip4/127.0.0.1/tcp/{p}/p2p/{k.node_id}" for p, k in zip(ports, keys, strict=True)]
    genesis = root / "genesis.json"
    write_atomic(genesis, chain.genesis_bytes(chain_id, keys, addresses=addrs), mode=0o644)
    base = NodeConfig(
        chain_id=chain_id,
        metrics=MetricsConfig(port=0),
        admin=AdminConfig(port=0),
        chain=ChainConfig(block_interval_ms=block_interval_ms),
    )
    dirs = []
    for i in range(n):
        others = tuple(a for j, a in enumerate(addrs) if j != i)
        if bootstrap_one and n > 1:
            others = (addrs[(i - 1) % n],)
        net = NetworkConfig("127.0.0.1", ports[i], others)
        cfg = dataclasses.replace(base, network=net)
        if roles is not None:
            cfg = dataclasses.replace(cfg, roles=roles[i])
        init_datadir(root / f"node{i:02d}", cfg, genesis=genesis, seed=seeds[i])
        dirs.append(DataDir(root / f"node{i:02d}"))
    return dirs
