"""The attacks of the standing adversary suite (issue 10), each a coroutine that runs
for a given time against the victims the attacker is connected to.

Each one is a message pattern that, before the fixes it pins, stalled or slowed a real
4-validator network:

* unresponsive: a low Status and a BlockRequest (so the victim answers us directly), an
  old vote and a far-ahead Status, then stop reading for 10 s; repeat. The victim's
  command loop used to wait 10 s per answer: 8 messages halted the chain for 29 s.
* old-votes: validly signed votes for past heights, 20/s. Each was answered with block
  sync; the chain stalled for a whole run.
* far-status: Status and votes claiming a height 10 000 ahead, 5/s: the victim asked us
  for blocks (and waited).
* junk-txs: transfers with absurd nonces, fees no balance covers, and from unfunded
  fresh keys, 50/s: relayed by everyone, refused only in the mempool.
* slow-blobs: 8 streams per victim for a 32 MiB blob, read at 16 KiB/s: four slow
  readers raised a node's RSS from 380 to 515 MiB.
* ping-flood: valid Pings, 200/s: library work on every node for nothing.
* vote-flood: current-height votes by a non-validator, far rounds too, 150/s: stopped
  the chain for 41 s.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from node.adversary.host import Attacker
from protocol.commands import TOPIC_CONSENSUS, TOPIC_TXS
from protocol.consensus.messages import BlockRequest, Status
from protocol.consensus.votes import Vote, VoteType
from protocol.envelope import seal
from protocol.identity import Keypair
from protocol.ledger.txs import Transfer
from protocol.messages import Ping

ZERO = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class BlobTarget:
    """A blob the victims hold (the harness puts it in their blob directories)."""

    digest: bytes
    size: int


Attack = Callable[[Attacker, float, BlobTarget | None], Awaitable[None]]


async def _paced(seconds: float, rate: float, step: Callable[[int], Awaitable[None]]) -> None:
    """Call `step(i)` at `rate` per second for `seconds`."""
    start = trio.current_time()
    gap = 1.0 / rate
    for i in itertools.count():
        at = start + i * gap
        if at - start >= seconds:
            return
        await trio.sleep_until(at)
        await step(i)


def _vote(a: Attacker, height: int, round_: int) -> Vote:
    return Vote(max(1, height), round_, VoteType.PREVOTE, None, a.key.public)


async def unresponsive(a: Attacker, seconds: float, blob: BlobTarget | None) -> None:
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        await a.publish(TOPIC_CONSENSUS, Status(1, ZERO))  # "I am far behind": the victim serves us
        await a.publish(TOPIC_CONSENSUS, _vote(a, a.height - 5, 0))
        await a.publish(TOPIC_CONSENSUS, Status(a.height + 10_000, ZERO))
        for peer in a.victims:
            await a.direct(peer, BlockRequest(1, 16))
        # Stop reading at once: the answers the victims are about to send us now hang in
        # stream negotiation with a peer that reads nothing.
        a.freeze(min(10.0, max(0.0, deadline - trio.current_time())))


async def old_votes(a: Attacker, seconds: float, blob: BlobTarget | None) -> None:
    async def step(i: int) -> None:
        await a.publish(TOPIC_CONSENSUS, _vote(a, a.height - 2 - i % 5, i % 3))

    await _paced(seconds, 20.0, step)


async def far_status(a: Attacker, seconds: float, blob: BlobTarget | None) -> None:
    async def step(i: int) -> None:
        ahead = a.height + 10_000
        await a.publish(TOPIC_CONSENSUS, Status(ahead, ZERO) if i % 2 else _vote(a, ahead, 0))

    await _paced(seconds, 5.0, step)


async def junk_txs(a: Attacker, seconds: float, blob: BlobTarget | None) -> None:
    async def step(i: int) -> None:
        kind = i % 3
        if kind == 0:  # a nonce the ledger will never admit
            await a.publish(TOPIC_TXS, Transfer(a.key.public, 1, 1_000_000 + i, 10))
        elif kind == 1:  # a fee no balance covers
            await a.publish(TOPIC_TXS, Transfer(a.key.public, 1, 0, 10**15))
        else:  # a fresh, unfunded account (signed by it, relayed by us)
            fresh = Keypair.derive(f"junk/{i}")
            await a.pubsub.publish(TOPIC_TXS, seal(Transfer(a.key.public, 1, 0, 10), fresh, a.chain_id))
            a.counters.published += 1

    await _paced(seconds, 50.0, step)


async def slow_blobs(a: Attacker, seconds: float, blob: BlobTarget | None) -> None:
    if blob is None:
        raise ValueError("slow-blobs needs a blob the victims hold (--blob DIGEST:SIZE)")
    deadline = trio.current_time() + seconds

    async def reader(peer: object) -> None:
        while trio.current_time() < deadline:
            await a.read_blob_slowly(peer, blob.digest, blob.size, 16 * 1024,  # type: ignore[arg-type]
                                     deadline - trio.current_time())
            await trio.sleep(0.5)

    async with trio.open_nursery() as nursery:
        for peer in a.victims:
            for _ in range(8):
                nursery.start_soon(reader, peer)


async def ping_flood(a: Attacker, seconds: float, blob: BlobTarget | None) -> None:
    async def step(i: int) -> None:
        await a.publish(TOPIC_TXS, Ping(i))

    await _paced(seconds, 200.0, step)


async def vote_flood(a: Attacker, seconds: float, blob: BlobTarget | None) -> None:
    async def step(i: int) -> None:
        far = i % 4 == 0
        await a.publish(TOPIC_CONSENSUS, _vote(a, a.height, a.round + (50 + i if far else i % 3)))

    await _paced(seconds, 150.0, step)


ATTACKS: dict[str, Attack] = {
    "unresponsive": unresponsive,
    "old-votes": old_votes,
    "far-status": far_status,
    "junk-txs": junk_txs,
    "slow-blobs": slow_blobs,
    "ping-flood": ping_flood,
    "vote-flood": vote_flood,
}
