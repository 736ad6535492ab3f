"""The network model: per-link latency, jitter, loss, duplication, bandwidth, partitions
and clogging.

`transmit` decides the fate of one copy of one message on one directed link at send
time: dropped (partition or loss), or delivered at one or two (duplicated) arrival
times. What is modelled and what is not:

- latency = link base + jitter drawn per copy (uniform in [0, jitter] or exponential
  with mean `jitter`, capped at 10x); reordering follows from independent jitter;
- bandwidth serialises messages on a link: a copy starts when the previous one on the
  same link has left, and takes size / bandwidth; there is no per-node uplink limit;
- partitions are groups: a link works only inside a group; a partition is checked at
  send time and again at arrival (a cut link loses what was in flight);
- a clog holds every copy sent on a link, or to/from a node, until the clog ends;
- no congestion collapse, no TCP retransmission: a lost copy is lost.
"""

from __future__ import annotations

import random

from netsim.config import NetworkConfig

#: (latency_ms, jitter_ms, loss, duplicate, bandwidth_bps) of one directed link.
LinkTuple = tuple[int, int, float, float, int]
EXP_JITTER_CAP = 10


class Network:
    __slots__ = (
        "_busy",
        "_clog_link",
        "_clog_node",
        "_clog_until",
        "_config",
        "_default",
        "_exp",
        "_next_group",
        "_overrides",
        "_rng",
        "dropped_loss",
        "dropped_partition",
        "duplicated",
        "group",
    )

    def __init__(self, nodes: int, config: NetworkConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._exp = config.jitter_dist == "exponential"
        self.group = [0] * nodes
        self._next_group = 1
        self._clog_node = [0] * nodes
        self._clog_link: dict[tuple[int, int], int] = {}
        self._clog_until = 0
        self._busy: dict[tuple[int, int], int] = {}
        self._default: LinkTuple = (0, 0, 0.0, 0.0, 0)
        self._overrides: dict[tuple[int, int], LinkTuple] = {}
        self.restore_loss()
        self.dropped_loss = 0
        self.dropped_partition = 0
        self.duplicated = 0

    # --- the per-copy decision ---------------------------------------------------------

    def connected(self, a: int, b: int) -> bool:
        return self.group[a] == self.group[b]

    def transmit(self, now: int, src: int, dst: int, size: int) -> tuple[int, ...]:
        """Arrival times of the copies of one message on src->dst (empty: dropped)."""
        if self.group[src] != self.group[dst]:
            self.dropped_partition += 1
            return ()
        link = self._overrides.get((src, dst), self._default) if self._overrides else self._default
        latency, jitter, loss, dup, bandwidth = link
        rnd = self._rng.random
        if loss and rnd() < loss:
            self.dropped_loss += 1
            return ()
        start = now
        if bandwidth:
            key = (src, dst)
            start = max(now, self._busy.get(key, 0)) - (-size * 1000 // bandwidth)
            self._busy[key] = start
        arrival = start + latency + (self._jitter(jitter) if jitter else 0)
        held = self._held_until(now, src, dst)
        if dup and rnd() < dup:
            self.duplicated += 1
            again = start + latency + (self._jitter(jitter) if jitter else 0)
            return (max(arrival, held), max(again, held))
        return (max(arrival, held),)

    def _held_until(self, now: int, src: int, dst: int) -> int:
        if now >= self._clog_until:
            return 0
        return max(self._clog_node[src], self._clog_node[dst], self._clog_link.get((src, dst), 0))

    def _jitter(self, jitter: int) -> int:
        if self._exp:
            return min(int(self._rng.expovariate(1.0 / jitter)), EXP_JITTER_CAP * jitter)
        return int(self._rng.random() * (jitter + 1))

    def figures(self, src: int, dst: int) -> tuple[int, int]:
        """What a perfect measurement of src->dst finds: the configured latency plus its
        mean jitter (ms) and bandwidth (bytes/s, 0: unlimited). Draws nothing from the
        rng, so probing links leaves every other draw of a run where it was."""
        latency, jitter, _, _, bandwidth = self._overrides.get((src, dst)) or self._default
        return latency + jitter // 2, bandwidth

    def latency(self, src: int, dst: int) -> int:
        """One latency draw for a stream transfer (blobs): no loss, no duplication."""
        latency, jitter = (self._overrides.get((src, dst)) or self._default)[:2]
        return latency + (self._jitter(jitter) if jitter else 0)

    # --- faults ------------------------------------------------------------------------

    def partition(self, groups: tuple[tuple[int, ...], ...]) -> None:
        rest = self._fresh_group()
        self.group = [rest] * len(self.group)
        for g in groups:
            gid = self._fresh_group()
            for node in g:
                self.group[node] = gid

    def isolate(self, node: int) -> None:
        self.group[node] = self._fresh_group()

    def clog(self, until: int, node: int | None, link: tuple[int, int] | None) -> None:
        if node is not None:
            self._clog_node[node] = max(self._clog_node[node], until)
        if link is not None:
            self._clog_link[link] = max(self._clog_link.get(link, 0), until)
        self._clog_until = max(self._clog_until, until)

    def heal(self) -> None:
        """Undo partitions, isolation and clogs (loss settings are kept)."""
        self.group = [0] * len(self.group)
        self._clog_node = [0] * len(self.group)
        self._clog_link.clear()
        self._clog_until = 0

    def set_loss(self, loss: float, link: tuple[int, int] | None) -> None:
        if link is None:
            self._default = (*self._default[:2], loss, *self._default[3:])
        else:
            base = self._overrides.get(link, self._default)
            self._overrides[link] = (*base[:2], loss, *base[3:])

    def restore_loss(self) -> None:
        """Back to the configured link parameters (the liveness phase starts with this)."""
        c = self._config
        self._default = (c.latency_ms, c.jitter_ms, c.loss, c.duplicate, c.bandwidth_bps)
        self._overrides = {
            (o.src, o.dst): (o.latency_ms, o.jitter_ms, o.loss, o.duplicate, o.bandwidth_bps) for o in c.links
        }

    def _fresh_group(self) -> int:
        self._next_group += 1
        return self._next_group
