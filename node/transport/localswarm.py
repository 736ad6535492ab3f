"""A few real transports in one process on loopback: tests, benchmarks, small swarms.

DESIGN.md's measurement (50 hosts in one process saturate a core at ~2 msg/s) is why
this is for a handful of nodes; bigger swarms run one process per node
(`python -m node.transport.peer`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import trio

from node.transport.blobs import BlobProvider
from node.transport.service import Transport, TransportConfig
from protocol.identity import Keypair


def swarm_keys(n: int, label: str = "swarm") -> list[Keypair]:
    return [Keypair.derive(f"{label}/{i}") for i in range(n)]


@asynccontextmanager
async def open_swarm(
    keys: Sequence[Keypair],
    config: TransportConfig,
    providers: Sequence[BlobProvider | None] | None = None,
    degree_to_seed: int = 2,
) -> AsyncIterator[list[Transport]]:
    """Start one transport per key; node i bootstraps to up to `degree_to_seed` earlier
    nodes, so the swarm is connected without a single hub."""
    transports: list[Transport] = []
    async with trio.open_nursery() as nursery:
        for i, key in enumerate(keys):
            earlier = [t.listen_addrs[0] for t in transports[-degree_to_seed:]]
            cfg = replace(config, bootstrap=tuple(earlier) + config.bootstrap)
            provider = providers[i] if providers is not None else None
            t = Transport(cfg, key, provider)
            await nursery.start(t.run)
            transports.append(t)
        try:
            yield transports
        finally:
            nursery.cancel_scope.cancel()


async def wait_connected(transports: Sequence[Transport], topic: str, timeout_s: float) -> None:
    """Until every node has at least one mesh peer on `topic`."""
    with trio.fail_after(timeout_s):
        while any(t.mesh_size(topic) < 1 for t in transports):
            await trio.sleep(0.05)
