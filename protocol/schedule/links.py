"""Signed link reports: what a node measured of its links to peers.

A node measures one-way delay (libp2p ping round trip / 2) and bandwidth (a timed
blob transfer) to a few peers at a time and gossips the latest figures as one
`LinkAdvert`, signed by the envelope like every message, with an absolute expiry no
further ahead than `MAX_LINK_TTL_MS`: a link that stops being measured stops being
believed. `LinkReport` is also a message on its own, so one link can be sealed and
committed (a crew's schedule is computed from committed reports).

Tags 0x62 (LinkReport) and 0x63 (LinkAdvert). This module imports nothing heavy:
every node loads it to decode gossip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.schedule.errors import LinkReportError
from protocol.schema import U16, U32, U64, Len, PubKey, message

#: Peers one advert may report on (a node keeps a mesh of a few dozen at most).
MAX_LINKS_PER_ADVERT = 64
#: Longest a link report may be believed after it is issued.
MAX_LINK_TTL_MS = 15 * 60 * 1000
#: Largest delay a report may carry (one minute, one way) and the bandwidth range
#: (1 kbit/s .. 4 Tbit/s, the U32 range in kbit/s).
MAX_DELAY_US = 60_000_000
MIN_BANDWIDTH_KBPS = 1


@message(0x62)
@dataclass(frozen=True, slots=True)
class LinkReport:
    """One link as its reporter measured it: to `peer`, one-way `delay_us`,
    `bandwidth_kbps` (kbit/s) from `samples` measurements, at `measured_at` (ms)."""

    peer: PubKey
    delay_us: U32
    bandwidth_kbps: U32
    samples: U16
    measured_at: U64


@message(0x63)
@dataclass(frozen=True, slots=True)
class LinkAdvert:
    """A node's current link reports, believed from `issued_at` until `expires_at` (ms)."""

    issued_at: U64
    expires_at: U64
    reports: Annotated[tuple[LinkReport, ...], Len(1, MAX_LINKS_PER_ADVERT)]


def check_report(report: LinkReport, reporter: bytes, issued_at: int) -> None:
    # Rule: a node does not report a link to itself.
    if report.peer == reporter:
        raise LinkReportError("a link report names its own reporter as the peer")
    # Rule: the delay is at most a minute and the bandwidth at least 1 kbit/s.
    if report.delay_us > MAX_DELAY_US:
        raise LinkReportError(f"delay {report.delay_us} us exceeds {MAX_DELAY_US}")
    if report.bandwidth_kbps < MIN_BANDWIDTH_KBPS:
        raise LinkReportError("bandwidth below 1 kbit/s")
    # Rule: at least one measurement, taken no later than the advert was issued.
    if report.samples < 1:
        raise LinkReportError("a link report must rest on at least one measurement")
    if report.measured_at > issued_at:
        raise LinkReportError("a link was measured after the advert reporting it was issued")


def check_advert(advert: LinkAdvert, reporter: bytes, now: int, max_ttl_ms: int = MAX_LINK_TTL_MS) -> None:
    """Accept an advert only while it is live, its TTL bounded and every report sound."""
    # Rule: the advert's lifetime is positive and at most the maximum TTL.
    if not advert.issued_at < advert.expires_at <= advert.issued_at + max_ttl_ms:
        raise LinkReportError("link advert time-to-live out of range")
    # Rule: not issued in the future (beyond one TTL of clock skew) and not expired.
    if advert.issued_at > now + max_ttl_ms or advert.expires_at <= now:
        raise LinkReportError("link advert is expired or from the future")
    # Rule: one report per peer.
    peers = [r.peer for r in advert.reports]
    if len(set(peers)) != len(peers):
        raise LinkReportError("link advert reports one peer twice")
    for report in advert.reports:
        check_report(report, reporter, advert.issued_at)
