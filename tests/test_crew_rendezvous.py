"""A crew's rendezvous over the p2p network (node/daemon/crews.py): a member takes rank 0's
address only for its own crew and only from its crew's rank 0; what peers send is
bounded; a member that hears nothing gives up in time; rank 0 resends its offer to
every other member until it withdraws it."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from node.config import CREW_CHEATS, RolesConfig
from node.daemon.crews import MAX_PENDING, CrewRendezvous, CrewRendezvousError, crew_host
from protocol.commands import MessageReceived
from protocol.errors import ConfigError
from protocol.identity import Keypair
from protocol.market.crews import crew_tag
from protocol.market.messages import CrewAddress

ME, RANK0, OTHER = (Keypair.derive(n) for n in ("me", "rank0", "other"))
TAG = crew_tag(b"t" * 32, [RANK0.public, ME.public])


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    async def send_to(self, peer: bytes, msg: Any) -> None:
        self.sent.append((peer, msg))


def received(sender: bytes, body: Any) -> MessageReceived:
    return MessageReceived("polnet/direct/1", sender, body, b"")


def test_a_member_takes_the_address_of_its_crew_from_its_rank_0_only() -> None:
    rv = CrewRendezvous(Recorder(), ME)

    async def main() -> tuple[str, int]:
        assert rv.observe(received(OTHER.public, CrewAddress(TAG, "10.0.0.9", 999, 0)))  # not rank 0
        assert rv.observe(received(RANK0.public, CrewAddress(b"x" * 32, "10.0.0.8", 998, 0)))  # another crew
        assert rv.observe(received(RANK0.public, CrewAddress(TAG, "127.0.0.1", 4242, 0)))
        return await rv.wait_for(TAG, RANK0.public, 1.0)

    assert trio.run(main) == ("127.0.0.1", 4242)


def test_an_address_that_arrives_while_the_member_waits_wakes_it() -> None:
    rv = CrewRendezvous(Recorder(), ME)
    got: list[tuple[str, int]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async def wait() -> None:
                got.append(await rv.wait_for(TAG, RANK0.public, 5.0))

            nursery.start_soon(wait)
            await trio.sleep(0.05)
            rv.observe(received(RANK0.public, CrewAddress(TAG, "127.0.0.1", 5000, 0)))

    trio.run(main)
    assert got == [("127.0.0.1", 5000)]


def test_a_member_that_hears_nothing_gives_up_with_a_clear_error() -> None:
    rv = CrewRendezvous(Recorder(), ME)

    async def main() -> None:
        await rv.wait_for(TAG, RANK0.public, 0.05)

    with pytest.raises(CrewRendezvousError, match="no address from the crew's rank 0"):
        trio.run(main)


def test_a_name_instead_of_an_ip_is_refused_and_what_peers_send_stays_bounded() -> None:
    rv = CrewRendezvous(Recorder(), ME)
    assert rv.observe(received(RANK0.public, CrewAddress(TAG, "evil.example", 80, 0)))
    assert rv.dropped == 1
    for i in range(3 * MAX_PENDING):
        rv.observe(received(OTHER.public, CrewAddress(i.to_bytes(32, "big"), "10.0.0.1", 1 + i, 0)))
    assert len(rv._received) == MAX_PENDING
    assert not rv.observe(received(RANK0.public, "a vote"))  # not ours: left for the core


def test_rank_0_resends_its_offer_to_every_other_member_until_withdrawn() -> None:
    net = Recorder()
    rv = CrewRendezvous(net, RANK0)
    crew = (RANK0.public, ME.public, OTHER.public)
    rv.offer(TAG, crew, "127.0.0.1", 4000)
    trio.run(rv.resend)
    trio.run(rv.resend)
    assert [p for p, _ in net.sent] == [ME.public, OTHER.public] * 2
    assert all(m.crew == TAG and (m.host, m.port) == ("127.0.0.1", 4000) for _, m in net.sent)
    rv.withdraw(TAG)
    trio.run(rv.resend)
    assert len(net.sent) == 4


def test_the_crew_host_is_the_listen_host_or_loopback_for_every_interface() -> None:
    assert crew_host("0.0.0.0") == "127.0.0.1"
    assert crew_host("10.1.2.3") == "10.1.2.3"
    assert crew_host("0.0.0.0", "192.168.1.5") == "192.168.1.5"


def test_crew_cheat_names_are_the_catalogs_and_a_typo_is_refused() -> None:
    from node.compute.crew.cheats import CATALOG

    assert set(CREW_CHEATS) == set(CATALOG)
    with pytest.raises(ConfigError, match="crew_cheat"):
        RolesConfig(crew_cheat="froze").validate()


def test_the_same_members_placed_again_are_another_crew_with_another_tag() -> None:
    members = [RANK0.public, ME.public]
    assert crew_tag(b"t" * 32, members, 1) != crew_tag(b"t" * 32, members, 0) == TAG
    assert crew_tag(b"t" * 32, members[::-1]) != TAG  # ranks matter


def test_a_daemon_hears_only_the_rank_0_of_a_crew_it_sits_in_so_a_flood_evicts_nothing() -> None:
    rv = CrewRendezvous(Recorder(), ME, my_crews=lambda: {TAG: RANK0.public})
    assert rv.observe(received(RANK0.public, CrewAddress(TAG, "127.0.0.1", 4242, 0)))
    for i in range(3 * MAX_PENDING):  # a peer's flood: other crews' tags, or ours from a non-rank-0
        tag = TAG if i % 2 else i.to_bytes(32, "big")
        rv.observe(received(OTHER.public, CrewAddress(tag, "10.0.0.1", 1 + i, 0)))
    assert rv.dropped == 3 * MAX_PENDING and len(rv._received) == 1

    async def main() -> tuple[str, int]:
        return await rv.wait_for(TAG, RANK0.public, 1.0)

    assert trio.run(main) == ("127.0.0.1", 4242)


def test_the_crews_a_node_sits_in_are_read_once_per_committed_height() -> None:
    """Every CrewAddress is checked against the node's crews; a flood of them must not
    load the market once per message."""
    from types import SimpleNamespace

    from node.daemon.crews import CrewsByHeight
    from protocol.market.state import MarketState

    loads = []

    class Core:
        ledger = SimpleNamespace(height=5)

        @property
        def market(self) -> MarketState:
            loads.append(self.ledger.height)
            return MarketState()

    daemon = SimpleNamespace(chain=SimpleNamespace(core=Core()), key=ME)
    mine = CrewsByHeight(daemon)
    for _ in range(100):
        assert mine() == {}
    Core.ledger.height = 6
    mine()
    assert loads == [5, 6]
