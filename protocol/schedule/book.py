"""The book of live link reports, and the links both ends agree on.

Every node keeps the latest live `LinkAdvert` of each reporter (bounded; the soonest
to expire makes room). A link between a and b is *agreed* when a reported b and b
reported a, both live, and the two figures are within the tolerance of each other;
its value is then the worse of the two (the larger delay, the smaller bandwidth),
so shading a figure inside the tolerance gains nothing. Links that are not agreed
are not used: the scheduler sees them as `MISSING_LINK` (a second of delay, 1 Mbit/s),
the worst link there is.

That is why a misreport only hurts the reporter's own link: a node that overstates
its link to b (to be placed as if well connected) is contradicted by b, and the link
then counts as missing, which the scheduler avoids; a node that understates it makes
the link look as bad as it said. Either way no schedule gets better by lying, and no
third party's links change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from protocol.latest import LatestBook
from protocol.schedule.errors import LinkReportError
from protocol.schedule.links import MAX_LINK_TTL_MS, LinkAdvert, LinkReport, check_advert
from protocol.schedule.model import MAX_DEVICES, Links

#: Reporters one node keeps adverts of.
MAX_REPORTERS = 4096
#: Agreement: |x - y| <= slack + max(x, y) * NUM / DEN, for delay and for bandwidth
#: (integers, so every node decides alike). Round trips on one link vary by a few ms
#: and short transfers by tens of percent.
DELAY_SLACK_US = 2_000
TOLERANCE_NUM, TOLERANCE_DEN = 1, 2
#: What an unagreed link is taken to be.
MISSING_DELAY_MS = 1000.0
MISSING_BANDWIDTH_GBPS = 0.001


@dataclass(frozen=True, slots=True)
class AgreedLink:
    a: bytes  # the smaller key of the pair
    b: bytes
    delay_ms: float
    bandwidth_gbps: float


def agree(x: LinkReport, y: LinkReport) -> bool:
    """Whether two ends' reports of one link are within the tolerance of each other."""
    n, d = TOLERANCE_NUM, TOLERANCE_DEN
    dx, dy = x.delay_us, y.delay_us
    bx, by = x.bandwidth_kbps, y.bandwidth_kbps
    delay_ok = d * abs(dx - dy) <= d * DELAY_SLACK_US + n * max(dx, dy)
    bandwidth_ok = d * abs(bx - by) <= n * max(bx, by)
    return delay_ok and bandwidth_ok


class LinkBook:
    def __init__(self, max_ttl_ms: int = MAX_LINK_TTL_MS, capacity: int = MAX_REPORTERS) -> None:
        self.max_ttl_ms = max_ttl_ms
        self._book: LatestBook[LinkAdvert] = LatestBook(capacity, _issued, _expires)

    def offer(self, now: int, reporter: bytes, advert: LinkAdvert) -> bool:
        """Keep a live, well-formed advert if it is newer than the reporter's last."""
        try:
            check_advert(advert, reporter, now, self.max_ttl_ms)
        except LinkReportError:
            return False
        # Rule: an older advert never replaces a newer one (gossip may reorder them).
        return self._book.offer(now, reporter, advert)

    def live(self, now: int) -> dict[bytes, LinkAdvert]:
        return self._book.live(now)

    def _reports(self, now: int) -> dict[bytes, dict[bytes, LinkReport]]:
        return {who: {r.peer: r for r in ad.reports} for who, ad in self.live(now).items()}

    def agreed(self, now: int) -> list[AgreedLink]:
        """Every link both of whose ends reported it, within the tolerance, sorted."""
        return agreed_links(self._reports(now))

    def disagreed(self, now: int) -> list[tuple[bytes, bytes]]:
        """Links both ends reported but with figures too far apart to use."""
        return [(a, b) for a, b, ra, rb in _pairs(self._reports(now)) if not agree(ra, rb)]

    def matrix(self, nodes: Sequence[bytes], now: int) -> Links:
        """Delay and bandwidth between `nodes` (in that order) from agreed links only;
        every other pair is `MISSING_LINK`."""
        return link_matrix(self._reports(now), nodes)

    def reporters(self, now: int) -> list[bytes]:
        return sorted(self.live(now))


Reports = Mapping[bytes, Mapping[bytes, LinkReport]]  # reporter -> peer -> its report


def agreed_links(reports: Reports) -> list[AgreedLink]:
    """Every link both of whose ends reported it, within the tolerance, sorted: the one
    rule for gossiped adverts (`LinkBook`) and committed reports (the crew placement)."""
    out = []
    for a, b, ra, rb in _pairs(reports):
        if agree(ra, rb):
            delay = max(ra.delay_us, rb.delay_us) / 1000.0
            kbps = min(ra.bandwidth_kbps, rb.bandwidth_kbps)
            out.append(AgreedLink(a, b, delay, kbps / 1e6))
    return out


def _pairs(reports: Reports) -> list[tuple[bytes, bytes, LinkReport, LinkReport]]:
    out = []
    for a in sorted(reports):
        for b, ra in sorted(reports[a].items()):
            if a < b and b in reports and a in reports[b]:
                out.append((a, b, ra, reports[b][a]))
    return out


def link_matrix(reports: Reports, nodes: Sequence[bytes]) -> Links:
    """Delay and bandwidth between `nodes` (in that order) from agreed links only; every
    other pair is the missing link (a second, 1 Mbit/s)."""
    if not 1 <= len(nodes) <= MAX_DEVICES or len(set(nodes)) != len(nodes):
        raise LinkReportError(f"a link matrix needs 1..{MAX_DEVICES} distinct nodes")
    index = {node: i for i, node in enumerate(nodes)}
    n = len(nodes)
    delay = [[0.0 if i == j else MISSING_DELAY_MS for j in range(n)] for i in range(n)]
    bandwidth = [[1.0 if i == j else MISSING_BANDWIDTH_GBPS for j in range(n)] for i in range(n)]
    wanted = {node: reports[node] for node in nodes if node in reports}
    for link in agreed_links(wanted):
        i, j = index[link.a], index[link.b]
        delay[i][j] = delay[j][i] = link.delay_ms
        bandwidth[i][j] = bandwidth[j][i] = max(link.bandwidth_gbps, MISSING_BANDWIDTH_GBPS)
    return Links.from_rows(delay, bandwidth)


def _issued(advert: LinkAdvert) -> int:
    return advert.issued_at


def _expires(advert: LinkAdvert) -> int:
    return advert.expires_at
