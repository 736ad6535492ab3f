"""Keep connections to the configured bootstrap peers, redialing with backoff.

Backoff doubles per failure up to a cap, with jitter so a swarm restarted at once
does not redial in lockstep; a success resets it. Banned peers are not redialed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    dial_timeout_s: float = 10.0
    check_interval_s: float = 1.0


class Backoff:
    """Per-peer next-attempt times."""

    def __init__(self, cfg: BackoffConfig, rng: random.Random) -> None:
        self._cfg = cfg
        self._rng = rng
        self._delay: dict[ID, float] = {}
        self._next: dict[ID, float] = {}

    def due(self, peer: ID, now: float) -> bool:
        return self._next.get(peer, 0.0) <= now

    def failed(self, peer: ID, now: float) -> float:
        previous = self._delay.get(peer, self._cfg.initial_s / self._cfg.factor)
        delay = min(self._cfg.max_s, previous * self._cfg.factor)
        self._delay[peer] = delay
        wait = delay * (1.0 + self._rng.uniform(-self._cfg.jitter, self._cfg.jitter))
        self._next[peer] = now + wait
        return wait

    def succeeded(self, peer: ID) -> None:
        self._delay.pop(peer, None)
        self._next.pop(peer, None)


async def keep_connected(
    host: IHost,
    peers: list[PeerInfo],
    cfg: BackoffConfig,
    is_banned: Callable[[ID], bool],
    rng: random.Random,
) -> None:
    """Runs forever: every `check_interval_s`, dial each due, disconnected bootstrap peer
    (concurrently, so one blackholed address does not delay the others)."""
    backoff = Backoff(cfg, rng)
    me = host.get_id()
    while True:
        now = trio.current_time()
        connected = set(host.get_connected_peers())
        due = [
            info
            for info in peers
            if info.peer_id != me
            and info.peer_id not in connected
            and not is_banned(info.peer_id)
            and backoff.due(info.peer_id, now)
        ]
        async with trio.open_nursery() as nursery:
            for info in due:
                nursery.start_soon(_dial, host, info, cfg, backoff)
        await trio.sleep(cfg.check_interval_s)


async def _dial(host: IHost, info: PeerInfo, cfg: BackoffConfig, backoff: Backoff) -> None:
    try:
        with trio.fail_after(cfg.dial_timeout_s):
            await host.connect(info)
        backoff.succeeded(info.peer_id)
    except Exception as exc:  # a bad peer must never stop the dialer
        wait = backoff.failed(info.peer_id, trio.current_time())
        log.debug("dial %s failed (%s); retry in %.1fs", info.peer_id, type(exc).__name__, wait)
