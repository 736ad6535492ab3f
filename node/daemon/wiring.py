"""Choose the parts a daemon runs: the chain core and the real transport.

Kept apart from app.py so the daemon's lifecycle does not change when a subsystem is
wired in, and tests can build a Daemon with parts of their own.
"""

from __future__ import annotations

from typing import Any

import trio

from node.config import NodeConfig
from node.daemon.app import Daemon
from node.daemon.blobdir import BlobDir
from node.daemon.chain import Chain, read_genesis
from node.daemon.network import start_transport
from node.datadir import DataDir
from protocol.identity import Keypair


def build_daemon(datadir: DataDir, config: NodeConfig, key: Keypair) -> Daemon:
    genesis = read_genesis(datadir.genesis)  # fail before any service starts

    def open_chain(daemon: Daemon) -> Chain:
        return Chain.open(genesis, key, datadir.chain_db, config.chain.block_interval_ms)

    async def open_network(daemon: Daemon, nursery: trio.Nursery) -> Any:
        return await start_transport(config, key, BlobDir(datadir.blobs), nursery)

    if genesis.chain_id != config.chain_id:
        from protocol.errors import ConfigError

        raise ConfigError(
            f"{datadir.genesis}: genesis is for chain {genesis.chain_id!r}, config says {config.chain_id!r}"
        )
    return Daemon(datadir, config, key, chain_factory=open_chain, network_factory=open_network)
