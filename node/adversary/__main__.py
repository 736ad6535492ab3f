"""The attacker as its own process, driven over stdin/stdout (JSON lines).

    python -m node.adversary --chain-id ID --seed HEX --target ADDR [--target ...]
                             [--blob DIGEST_HEX:SIZE]

stdout: {"event": "ready", "node_id": ..., "victims": N} once connected, then events.
stdin commands (one per line):
    run NAME SECONDS     run one attack of node.adversary.attacks.ATTACKS; answers
                         {"event": "finished", "attack": NAME, ...counters}
    stats                counters and the chain height seen so far
    quit                 stop (SIGTERM/SIGINT do the same)
"""

from __future__ import annotations

import argparse
import signal
from dataclasses import asdict

import trio

from node.adversary.attacks import ATTACKS, BlobTarget
from node.adversary.host import Attacker, open_attacker
from node.transport.peer import MAX_COMMAND_BYTES, emit, stdin_lines
from protocol.identity import Keypair

MAX_ATTACK_S = 3600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m node.adversary", description=__doc__.split("\n")[0])
    p.add_argument("--chain-id", required=True)
    p.add_argument("--seed", required=True, help="hex of the attacker's 32-byte ed25519 seed")
    p.add_argument("--target", action="append", default=[], help="/ip4/H/tcp/P/p2p/ID (repeatable)")
    p.add_argument("--blob", default="", help="DIGEST_HEX:SIZE of a blob the victims hold (slow-blobs)")
    return p.parse_args(argv)


def parse_blob(text: str) -> BlobTarget | None:
    if not text:
        return None
    digest, _, size = text.partition(":")
    raw = bytes.fromhex(digest)
    if len(raw) != 32 or not size.isdigit():
        raise SystemExit("--blob must be DIGEST_HEX:SIZE")
    return BlobTarget(raw, int(size))


async def run_attack(a: Attacker, name: str, seconds: float, blob: BlobTarget | None) -> None:
    emit("started", attack=name, seconds=seconds, height=a.height)
    before = asdict(a.counters)
    try:
        await ATTACKS[name](a, seconds, blob)
    except Exception as exc:  # report and stay up: the harness decides what a failure means
        emit("error", attack=name, detail=f"{type(exc).__name__}: {exc}")
    after = asdict(a.counters)
    delta = {k: v - before[k] for k, v in after.items() if isinstance(v, (int, float))}
    emit("finished", attack=name, height=a.height, **delta)


async def commands(a: Attacker, blob: BlobTarget | None, nursery: trio.Nursery) -> None:
    async for line in stdin_lines(MAX_COMMAND_BYTES):
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            nursery.cancel_scope.cancel()
            return
        if words[0] == "stats":
            emit("stats", height=a.height, victims=len(a.victims), **asdict(a.counters))
        elif words[0] == "run" and len(words) == 3 and words[1] in ATTACKS:
            try:
                seconds = min(MAX_ATTACK_S, max(0.0, float(words[2])))
            except ValueError:
                emit("error", detail=f"bad seconds {words[2]!r}")
                continue
            nursery.start_soon(run_attack, a, words[1], seconds, blob)
        else:
            emit("error", detail=f"unknown command {line[:80]!r}; attacks: {', '.join(ATTACKS)}")
    nursery.cancel_scope.cancel()


async def main(args: argparse.Namespace) -> None:
    key = Keypair.from_seed(bytes.fromhex(args.seed))
    blob = parse_blob(args.blob)
    async with open_attacker(key, args.chain_id, list(args.target)) as attacker, \
            trio.open_nursery() as nursery:
        emit("ready", node_id=key.node_id, public=key.public.hex(), victims=len(attacker.victims))
        nursery.start_soon(commands, attacker, blob, nursery)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    emit("stopped")


if __name__ == "__main__":
    trio.run(main, parse_args())
