"""One transport host in its own process, driven over stdin/stdout (JSON lines).

Multi-process tests and `bench/transport.py` start a dozen of these: one py-libp2p
host costs 5-10 ms of CPU per delivered message, so a real swarm needs real processes.

    python -m node.transport.peer --label n0 --port 0 [--bootstrap ADDR ...]

stdout: {"event": "ready", ...} once listening, then one line per event.
stdin commands (one per line):
    publish COUNT RATE [TOPIC]   gossip COUNT Pings at RATE/s; the nonce is the send
                                 time in ns, so receivers measure latency
    put NBYTES                   store a deterministic blob, answer with its digest
    fetch DIGEST_HEX MAX         fetch a blob from any peer, answer ok/error
    stats                        counters, mesh sizes, peers connected and known, CPU so far
    quit                         shut down cleanly (SIGTERM/SIGINT do the same)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import trio

from node.transport.blobs import MemoryBlobStore
from node.transport.budgets import Budget
from node.transport.dialer import BackoffConfig
from node.transport.discovery import DiscoveryConfig
from node.transport.gossip import GossipConfig
from node.transport.service import Transport, TransportConfig
from protocol.commands import TOPIC_TXS
from protocol.errors import PolnetError
from protocol.identity import Keypair
from protocol.messages import Ping
from protocol.schema import tag_of

#: A command line longer than this is not one of ours.
MAX_COMMAND_BYTES = 1024
#: Most messages one `publish` command may send, and the fastest rate it accepts.
MAX_PUBLISH_COUNT = 100_000
MAX_PUBLISH_RATE = 10_000.0
MAX_PUT_BYTES = 64 * 1024 * 1024
MAX_TARGET_PEERS = 128


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m node.transport.peer",
        description="One transport host in its own process, driven over stdin/stdout (JSON lines).",
    )
    p.add_argument("--label", required=True, help="derives the node key (test/bench identities only)")
    p.add_argument("--chain-id", default="devnet")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--bootstrap", action="append", default=[], help="/ip4/H/tcp/P/p2p/ID (repeatable)")
    p.add_argument("--target-peers", type=int, default=DiscoveryConfig().target_peers,
                   help="connections peer discovery dials towards (1..128)")
    return p.parse_args(argv)


class Peer:
    def __init__(self, transport: Transport, store: MemoryBlobStore) -> None:
        self.t = transport
        self.store = store
        self.received = 0

    async def receive_loop(self) -> None:
        async for msg in self.t.inbound:
            self.received += 1
            nonce = getattr(msg.body, "nonce", None)
            emit("recv", topic=msg.topic, sender=msg.sender.hex(), nonce=nonce, at_ns=time.time_ns())

    async def publish(self, count: int, rate: float, topic: str) -> None:
        count = min(count, MAX_PUBLISH_COUNT)
        gap = 1.0 / min(max(rate, 0.001), MAX_PUBLISH_RATE)
        start = trio.current_time()
        for i in range(count):
            await trio.sleep_until(start + i * gap)
            await self.t.publish(topic, Ping(time.time_ns()))
        emit("published", count=count, topic=topic)

    async def fetch(self, digest_hex: str, max_size: int) -> None:
        try:
            data = await self.t.fetch_blob(bytes.fromhex(digest_hex), max_size)
            emit("fetched", digest=digest_hex, size=len(data))
        except (PolnetError, ValueError) as exc:
            emit("fetch_failed", digest=digest_hex, error=type(exc).__name__, detail=str(exc))

    def stats(self) -> None:
        emit(
            "stats",
            received=self.received,
            cpu_s=time.process_time(),
            peers=[key.hex() for key in self.t.peers()],
            known=len(set(self.t.discovery.book.peers()) | set(self.t.host.get_connected_peers())),
            mesh={topic: self.t.mesh_size(topic) for topic in self.t.config.gossip.topics},
            metrics=self.t.metrics(),
        )

    async def command(self, line: str, nursery: trio.Nursery) -> bool:
        """Run one command; False means quit."""
        words = line.split()
        if not words:
            return True
        cmd, args = words[0], words[1:]
        if cmd == "quit":
            return False
        if cmd == "stats":
            self.stats()
        elif cmd == "publish":
            topic = args[2] if len(args) > 2 else TOPIC_TXS
            nursery.start_soon(self.publish, int(args[0]), float(args[1]), topic)
        elif cmd == "put":
            data = deterministic_blob(min(int(args[0]), MAX_PUT_BYTES), self.t.config.chain_id)
            emit("stored", digest=self.store.put(data).hex(), size=len(data))
        elif cmd == "fetch":
            nursery.start_soon(self.fetch, args[0], int(args[1]))
        else:
            emit("error", detail=f"unknown command {cmd!r}")
        return True


def deterministic_blob(n: int, salt: str) -> bytes:
    block = (salt.encode() + b"/blob/") * 64
    return (block * (n // len(block) + 1))[:n]


async def stdin_lines(max_bytes: int) -> AsyncIterator[str]:
    """This process's stdin, one decoded line at a time, for the tool processes a parent
    drives with commands; a line longer than `max_bytes` is dropped and reported, so the
    buffer stays bounded whatever the parent writes."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buf = b""
    while True:
        chunk = await stdin.receive_some(4096)
        if not chunk:
            return
        buf += chunk
        if len(buf) > max_bytes and b"\n" not in buf:
            emit("error", detail="command line too long")
            buf = b""
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode("utf-8", "replace")


async def read_commands(peer: Peer, nursery: trio.Nursery) -> None:
    async for line in stdin_lines(MAX_COMMAND_BYTES):
        try:
            if not await peer.command(line, nursery):
                nursery.cancel_scope.cancel()
                return
        except (ValueError, IndexError, PolnetError) as exc:
            emit("error", detail=f"{type(exc).__name__}: {exc}")
    nursery.cancel_scope.cancel()


async def watch_signals(nursery: trio.Nursery) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            nursery.cancel_scope.cancel()
            return


async def main(args: argparse.Namespace) -> None:
    key = Keypair.derive(args.label)
    cfg = TransportConfig(
        chain_id=args.chain_id,
        listen_host=args.host,
        listen_port=args.port,
        bootstrap=tuple(args.bootstrap),
        backoff=BackoffConfig(initial_s=0.25, max_s=5.0, check_interval_s=0.25),
        # The throughput phase floods from one peer on purpose: lift the per-connection cap.
        gossip=replace(GossipConfig(), peer_msgs_per_s=MAX_PUBLISH_RATE, peer_burst=MAX_PUBLISH_RATE),
        discovery=DiscoveryConfig(target_peers=min(max(args.target_peers, 1), MAX_TARGET_PEERS)),
    )
    store = MemoryBlobStore()
    opened = Transport.open(cfg, key, blob_provider=store.get, has_blob=store.has)
    async with opened as transport, trio.open_nursery() as nursery:
        # ... and the per-signer budget for Pings (a daemon allows a few per second).
        transport.budgets.set_budget(tag_of(Ping), Budget(MAX_PUBLISH_RATE, MAX_PUBLISH_RATE))
        peer = Peer(transport, store)
        emit("ready", addrs=transport.listen_addrs, node_id=key.node_id, public=key.public.hex())
        nursery.start_soon(peer.receive_loop)
        nursery.start_soon(read_commands, peer, nursery)
        nursery.start_soon(watch_signals, nursery)
    emit("stopped")


if __name__ == "__main__":
    trio.run(main, parse_args())
