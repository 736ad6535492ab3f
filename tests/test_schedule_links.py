"""Link reports: the wire records and their limits, the book's agreement rule, and the
daemon's measurement service over two real py-libp2p hosts."""

from __future__ import annotations

import pytest
import trio

from protocol.encoding import pack_plain
from protocol.envelope import open_envelope, seal
from protocol.errors import LimitExceeded, Malformed
from protocol.identity import Keypair
from protocol.schedule.book import MISSING_BANDWIDTH_GBPS, MISSING_DELAY_MS, LinkBook
from protocol.schedule.errors import LinkReportError
from protocol.schedule.links import (
    MAX_LINK_TTL_MS,
    MAX_LINKS_PER_ADVERT,
    LinkAdvert,
    LinkReport,
    check_advert,
)
from protocol.schema import from_wire, to_wire

CHAIN = "polnet-test"
A, B, C = (Keypair.derive(f"link-{x}") for x in "abc")
NOW = 1_000_000


def report(peer: Keypair, delay_us: int = 10_000, kbps: int = 1_000_000, at: int = NOW) -> LinkReport:
    return LinkReport(peer.public, delay_us, kbps, 3, at)


def advert(*reports: LinkReport, at: int = NOW, ttl: int = 60_000) -> LinkAdvert:
    return LinkAdvert(at, at + ttl, tuple(reports))


def test_a_link_advert_travels_in_a_signed_envelope() -> None:
    ad = advert(report(B), report(C, 20_000, 500_000))
    env = open_envelope(seal(ad, A, CHAIN), CHAIN)
    assert env.body == ad and env.sender == A.public
    single = open_envelope(seal(report(B), A, CHAIN), CHAIN)
    assert single.body == report(B)


def test_the_decoder_refuses_adverts_beyond_their_limits() -> None:
    wire = to_wire(advert(report(B)))
    too_many = [wire[0], wire[1], [to_wire(report(B))] * (MAX_LINKS_PER_ADVERT + 1)]
    with pytest.raises(LimitExceeded):
        from_wire(LinkAdvert, too_many)
    with pytest.raises(LimitExceeded):
        from_wire(LinkAdvert, [wire[0], wire[1], []])  # an empty advert says nothing
    short_key = [b"\x01" * 31, 1, 1, 1, 1]
    with pytest.raises(LimitExceeded):
        from_wire(LinkReport, short_key)
    with pytest.raises(LimitExceeded):
        from_wire(LinkReport, [B.public, 2**32, 1, 1, 1])  # delay beyond u32
    with pytest.raises(Malformed):
        from_wire(LinkReport, [B.public, 1.5, 1, 1, 1])
    with pytest.raises(Malformed):
        from_wire(LinkReport, [B.public, 1, 1, 1, 1, 1])  # an unknown extra field
    raw = seal(advert(report(B)), A, CHAIN)
    with pytest.raises(Malformed):
        open_envelope(raw + pack_plain(0), CHAIN)  # trailing bytes after the envelope


@pytest.mark.parametrize(
    ("ad", "reason"),
    [
        (advert(report(B), ttl=MAX_LINK_TTL_MS + 1), "time-to-live"),
        (advert(report(B), ttl=0), "time-to-live"),
        (advert(report(B), at=NOW - 120_000), "expired"),
        (advert(report(B), at=NOW + MAX_LINK_TTL_MS + 1), "future"),
        (advert(report(B), report(B, 5)), "twice"),
        (advert(report(A)), "own reporter"),
        (advert(report(B, delay_us=60_000_001)), "delay"),
        (advert(report(B, kbps=0)), "bandwidth"),
        (advert(LinkReport(B.public, 1, 1, 0, NOW)), "at least one"),
        (advert(report(B, at=NOW + 1)), "after the advert"),
    ],
)
def test_advert_rules_name_what_is_wrong(ad: LinkAdvert, reason: str) -> None:
    with pytest.raises(LinkReportError, match=reason):
        check_advert(ad, A.public, NOW)


def test_only_links_both_ends_report_within_the_tolerance_are_used() -> None:
    book = LinkBook()
    assert book.offer(NOW, A.public, advert(report(B, 10_000, 1_000_000), report(C, 30_000, 1_000_000)))
    assert book.offer(NOW, B.public, advert(report(A, 12_000, 800_000)))  # agrees with A, within tolerance
    assert book.offer(NOW, C.public, advert(report(A, 200_000, 1_000_000)))  # says the A-C link is far worse
    agreed = book.agreed(NOW)
    assert [(x.a, x.b) for x in agreed] == [tuple(sorted((A.public, B.public)))]
    # The agreed value is the worse of the two reports: nothing to gain by shading.
    assert agreed[0].delay_ms == 12.0 and agreed[0].bandwidth_gbps == 0.8
    assert book.disagreed(NOW) == [tuple(sorted((A.public, C.public)))]
    m = book.matrix([A.public, B.public, C.public], NOW)
    assert m.delay_ms[0][1] == m.delay_ms[1][0] == 12.0
    assert m.delay_ms[0][2] == MISSING_DELAY_MS and m.bandwidth_gbps[2][0] == MISSING_BANDWIDTH_GBPS
    # B-C: neither reported the other, so unknown as well.
    assert m.delay_ms[1][2] == MISSING_DELAY_MS


def test_a_node_that_overstates_its_link_gets_a_worse_link_not_a_better_one() -> None:
    honest = LinkBook()
    honest.offer(NOW, A.public, advert(report(B, 40_000, 100_000)))
    honest.offer(NOW, B.public, advert(report(A, 40_000, 100_000)))
    lying = LinkBook()
    lying.offer(NOW, A.public, advert(report(B, 1_000, 10_000_000)))  # claims a LAN link
    lying.offer(NOW, B.public, advert(report(A, 40_000, 100_000)))
    nodes = [A.public, B.public]
    truth, lie = honest.matrix(nodes, NOW), lying.matrix(nodes, NOW)
    assert lie.delay_ms[0][1] >= truth.delay_ms[0][1]
    assert lie.bandwidth_gbps[0][1] <= truth.bandwidth_gbps[0][1]


def test_the_book_keeps_the_newest_live_advert_per_reporter_and_is_bounded() -> None:
    book = LinkBook(capacity=2)
    assert book.offer(NOW, A.public, advert(report(B), at=NOW))
    assert not book.offer(NOW, A.public, advert(report(C), at=NOW - 1))  # older: ignored
    assert book.offer(NOW, A.public, advert(report(C), at=NOW + 1))
    assert [r.peer for r in book.live(NOW)[A.public].reports] == [C.public]
    assert book.offer(NOW, B.public, advert(report(A), ttl=10))
    assert book.offer(NOW, C.public, advert(report(A)))  # full: the soonest to expire goes
    assert set(book.live(NOW)) == {A.public, C.public}
    assert book.live(NOW + 120_000) == {}
    assert not book.offer(NOW, A.public, advert(report(A)))  # a self-link is refused


def test_two_hosts_measure_each_other_and_agree_on_their_link() -> None:
    from node.config import LinksConfig
    from node.daemon.links import PROBE_BYTES, LinkService, with_probe_blob
    from node.daemon.network import Tap, TransportNetwork
    from node.transport import Transport, TransportConfig
    from protocol.commands import TOPIC_ADVERTS

    cfg = LinksConfig(period_ms=100, peers_per_period=2, pings=2, ttl_ms=60_000)

    async def main() -> None:
        async with Transport.open(TransportConfig(CHAIN), A, blob_provider=with_probe_blob(None)) as ta:
            tb_cfg = TransportConfig(CHAIN, bootstrap=tuple(ta.listen_addrs))
            async with Transport.open(tb_cfg, B, blob_provider=with_probe_blob(None)) as tb:
                await ta.wait_for_mesh(TOPIC_ADVERTS, 1, 30)
                await tb.wait_for_mesh(TOPIC_ADVERTS, 1, 30)
                sa, sb = LinkService(TransportNetwork(ta), A, cfg), LinkService(TransportNetwork(tb), B, cfg)
                async with trio.open_nursery() as nursery:
                    for svc in (sa, sb):
                        tap = Tap(svc.network, svc.observe)
                        nursery.start_soon(_drain, tap)
                        await nursery.start(svc.run)
                    with trio.fail_after(60):
                        while not (sa.book.agreed(sa.clock_ms()) and sb.book.agreed(sb.clock_ms())):
                            await trio.sleep(0.1)
                    nursery.cancel_scope.cancel()
        (link,) = sa.book.agreed(sa.clock_ms())
        assert {link.a, link.b} == {A.public, B.public}
        assert 0 < link.delay_ms < 100 and link.bandwidth_gbps > 0
        assert ta.metrics()["blob_bytes_out"] + tb.metrics()["blob_bytes_out"] >= 2 * PROBE_BYTES
        doc = sa.doc({})
        assert len(doc["nodes"]) == 2 and doc["delay_ms"][0][1] == link.delay_ms

    trio.run(main)


async def _drain(tap) -> None:  # type: ignore[no-untyped-def]
    while True:
        await tap.receive()
