"""Choose the parts a daemon runs: the market chain core, the real transport, compute.

Kept apart from app.py so the daemon's lifecycle does not change when a subsystem is
wired in, and tests can build a Daemon with parts of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from node.config import NodeConfig
from node.daemon.app import Daemon
from node.daemon.blobdir import BlobDir
from node.daemon.chain import Chain, read_genesis
from node.daemon.crews import NetworkCrewRunner, crew_host, start_crews
from node.daemon.lazycompute import LazyCompute
from node.daemon.links import start_links
from node.daemon.network import start_transport
from node.daemon.roles import build_roles
from node.datadir import DataDir
from protocol.errors import ConfigError
from protocol.identity import Keypair


def build_daemon(datadir: DataDir, config: NodeConfig, key: Keypair) -> Daemon:
    genesis = read_genesis(datadir.genesis)  # fail before any service starts
    if genesis.chain_id != config.chain_id:
        raise ConfigError(
            f"{datadir.genesis}: genesis is for chain {genesis.chain_id!r}, config says {config.chain_id!r}"
        )
    blobs = BlobDir(datadir.blobs)

    def open_chain(daemon: Daemon) -> Chain:
        roles = build_roles(config.roles, key, genesis.market, daemon.capacity)
        return Chain.open(genesis, key, datadir.chain_db, config.chain.block_interval_ms, roles.roles,
                          enc_generation=config.roles.enc_generation)

    async def open_network(daemon: Daemon, nursery: trio.Nursery) -> Any:
        network, addrs = await start_transport(config, key, blobs, nursery, genesis.hash(),
                                               chain=lambda: daemon.chain)
        tapped = await start_links(daemon, network, nursery)
        return await start_crews(daemon, tapped, nursery), addrs

    def open_compute(daemon: Daemon) -> Any:
        def build() -> Any:
            from node.daemon.compute import MarketComputeRunner  # torch: only on the first job

            host = crew_host(config.network.listen_host, config.network.crew_host)
            crews = NetworkCrewRunner(key, daemon.crews, Path(datadir.root) / "crews", host,
                                      cheat=config.roles.crew_cheat, progress=daemon.progress)
            return MarketComputeRunner(blobs, daemon.network.fetch_blob, key.public, cheat=config.roles.cheat,
                                       progress=daemon.progress, crews=crews)

        return LazyCompute(build, blobs)

    return Daemon(datadir, config, key, chain_factory=open_chain, network_factory=open_network,
                  compute_factory=open_compute)
