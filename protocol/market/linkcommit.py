"""When a worker commits its measured links (CommitLinks), as one rule for both shells.

The shell measures (a daemon: libp2p pings and a timed probe blob, node/daemon/links.py;
netsim: its network model's figures for the pair) and hands the current reports to the
market node as a `MeasuredLinks` local request. The committer sends a CommitLinks when
the node is a registered worker and its committed reports are missing, about to age out
of the placement's window (`crews.LINK_TTL_BLOCKS`), or no longer agree with what it
measures now (another peer set, or a figure outside the book's tolerance) — and never
more often than every `MIN_GAP_BLOCKS` (100), so jittery measurements cost a bounded fee.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.market.crews import LINK_TTL_BLOCKS
from protocol.market.state import MarketState
from protocol.market.txs import CommitLinks
from protocol.schedule.book import agree
from protocol.schedule.links import MAX_LINKS_PER_ADVERT, LinkReport

#: A commit this old is renewed (half the window the placement believes it for).
RECOMMIT_BLOCKS = LINK_TTL_BLOCKS // 2
#: Fewest blocks between two commits of one worker: a timed 256 KiB probe varies by more
#: than the book's tolerance from one round to the next on some links, and every commit
#: costs a fee, so a jittery link is re-committed at most this often.
MIN_GAP_BLOCKS = 100


@dataclass(frozen=True, slots=True)
class MeasuredLinks:
    """The shell's current link reports (a LocalRequest body for `MarketNode`)."""

    reports: tuple[LinkReport, ...]


@dataclass
class LinkCommitter:
    measured: tuple[LinkReport, ...] = ()
    sent_at: int | None = None

    def offer(self, measured: MeasuredLinks, me: bytes) -> None:
        """Keep the freshest MAX_LINKS_PER_ADVERT reports, one per peer, none to `me`."""
        latest: dict[bytes, LinkReport] = {}
        for r in measured.reports:
            if r.peer != me and (r.peer not in latest or r.measured_at > latest[r.peer].measured_at):
                latest[r.peer] = r
        fresh = sorted(latest.values(), key=lambda r: -r.measured_at)[:MAX_LINKS_PER_ADVERT]
        self.measured = tuple(sorted(fresh, key=lambda r: r.peer))

    def due(self, market: MarketState, me: bytes) -> CommitLinks | None:
        """The CommitLinks to send now, if one is due (the caller stamps nonce and fee)."""
        if me not in market.workers or not self.measured:
            return None
        if self.sent_at is not None and market.height - self.sent_at < MIN_GAP_BLOCKS:
            return None
        committed = market.links.get(me)
        if committed is not None and market.height - committed.height < RECOMMIT_BLOCKS \
                and not changed(committed.reports, self.measured):
            return None
        self.sent_at = market.height
        return CommitLinks(self.measured, 0, 0)


def changed(old: tuple[LinkReport, ...], new: tuple[LinkReport, ...]) -> bool:
    """Whether `new` reports other peers than `old`, or any figure the book would not
    take as the same link."""
    before = {r.peer: r for r in old}
    return set(before) != {r.peer for r in new} or any(not agree(before[r.peer], r) for r in new)
