"""Every message type has a budget; useless messages cost the sender, never an honest
relay; and publishing never waits on a peer that stopped reading."""

from __future__ import annotations

import pytest
import trio

from node.adversary.host import open_attacker
from node.transport import TransportConfig
from node.transport.backpressure import OUTBOUND_HIGH_WATER, STALL_S, DrainWatch
from node.transport.budgets import JUNK_ALLOWANCE, SENDER_BUDGETS, STALE_ALLOWANCE, MessageBudgets
from node.transport.gossip import EnvelopeValidator, GossipConfig
from node.transport.host import peer_id_of
from node.transport.localswarm import open_swarm, swarm_keys, wait_connected
from node.transport.police import PENALTY_JUNK, PENALTY_OVER_BUDGET, PeerPolice
from protocol.commands import TOPIC_CONSENSUS, TOPIC_TXS
from protocol.consensus.relevance import NodeView, Relevance, judge
from protocol.consensus.votes import Vote, VoteType
from protocol.envelope import Envelope, open_envelope, seal
from protocol.identity import Keypair
from protocol.messages import Ping

CHAIN = "devnet-test"
pytestmark = pytest.mark.timeout(90)


def _env(key: Keypair, body: object) -> Envelope:
    return open_envelope(seal(body, key, CHAIN), CHAIN)


def _budgets(now: list[float]) -> tuple[MessageBudgets, PeerPolice]:
    police = PeerPolice(-40.0, 60.0, lambda: now[0])
    keys = {peer_id_of(k.public): k.public for k in (SENDER, RELAY)}
    return MessageBudgets(police, lambda: now[0], keys.get), police


SENDER, RELAY = Keypair.derive("sender"), Keypair.derive("relay")
SENDER_ID, RELAY_ID = peer_id_of(SENDER.public), peer_id_of(RELAY.public)


def test_over_budget_costs_the_signer_first_hand_and_nothing_to_a_relay() -> None:
    now = [0.0]
    budgets, police = _budgets(now)
    burst = int(SENDER_BUDGETS[0x02].burst)
    pings = [_env(SENDER, Ping(i)) for i in range(burst + 4)]
    assert all(budgets.admit(RELAY_ID, e) for e in pings[:burst])
    assert not any(budgets.admit(RELAY_ID, e) for e in pings[burst : burst + 2])  # relayed: dropped, free
    assert police.app_score(RELAY_ID) == 0.0
    assert not any(budgets.admit(SENDER_ID, e) for e in pings[burst + 2 :])  # first-hand: charged
    assert police.app_score(SENDER_ID) == -2 * PENALTY_OVER_BUDGET
    now[0] += 1.0  # the bucket refills at its rate
    assert budgets.admit(SENDER_ID, _env(SENDER, Ping(999)))


def test_useless_messages_are_free_up_to_the_allowance_then_each_costs_the_forwarder() -> None:
    now = [0.0]
    budgets, police = _budgets(now)
    budgets.relevance = lambda env: Relevance.JUNK
    free = int(JUNK_ALLOWANCE.burst)
    votes = [_env(SENDER, Vote(1, i, VoteType.PREVOTE, None, SENDER.public)) for i in range(free + 5)]
    assert not any(budgets.admit(SENDER_ID, e) for e in votes)
    assert police.app_score(SENDER_ID) == -5 * PENALTY_JUNK
    assert budgets.counters.junk == free + 5


class _Msg:
    """The one field of a pubsub message the gate reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def _stale_gate() -> tuple[EnvelopeValidator, PeerPolice, _Msg]:
    """A gate whose relevance check calls everything stale, and one stale vote for it."""
    now = [0.0]
    budgets, police = _budgets(now)
    budgets.relevance = lambda env: Relevance.STALE
    me = peer_id_of(Keypair.derive("me").public)
    v = EnvelopeValidator(CHAIN, GossipConfig(), lambda: now[0], lambda p, r: None, me, budgets=budgets)
    return v, police, _Msg(seal(Vote(1, 0, VoteType.PREVOTE, None, SENDER.public), SENDER, CHAIN))


def test_an_ignored_message_is_not_cached_as_invalid_so_its_honest_relays_pay_nothing() -> None:
    v, police, raw = _stale_gate()
    assert not v.gate(SENDER_ID, raw)  # type: ignore[arg-type]
    relays = [peer_id_of(Keypair.derive(f"relay/{i}").public) for i in range(50)]
    for relay in relays:  # the same bytes from every honest relay in the mesh
        assert not v.gate(relay, raw)  # type: ignore[arg-type]
    assert all(police.app_score(r) == 0.0 for r in relays)
    assert v.counters.rejected == 0  # never "invalid": py-libp2p would charge each relay 20


def test_the_same_useless_bytes_again_and_again_count_against_the_allowance() -> None:
    v, police, raw = _stale_gate()
    for _ in range(int(STALE_ALLOWANCE.burst) + 3):
        assert not v.gate(SENDER_ID, raw)  # type: ignore[arg-type]
    assert police.app_score(SENDER_ID) == -3 * PENALTY_JUNK


def test_backpressure_waits_for_a_draining_peer_but_not_for_a_stalled_one() -> None:
    now = [0.0]
    queues: dict[str, list[int]] = {"stalled": [0] * OUTBOUND_HIGH_WATER, "fine": [0]}
    watch = DrainWatch(lambda: queues, lambda: now[0])
    assert watch.congested()  # just seen full: it may be draining
    now[0] += STALL_S / 2
    assert watch.congested()
    now[0] += STALL_S
    assert not watch.congested() and watch.stalled == 1
    queues["stalled"].pop()  # it moved again ...
    assert not watch.congested()
    queues["stalled"].append(0)  # ... so, full again, it counts again
    now[0] += STALL_S / 2
    assert watch.congested()


def test_a_stock_libp2p_peer_flooding_valid_pings_is_banned_and_no_honest_node_is_charged() -> None:
    async def main() -> None:
        keys = swarm_keys(3, "budget")
        async with open_swarm(keys, TransportConfig(chain_id=CHAIN)) as ts:
            await wait_connected(ts, TOPIC_TXS, 15)
            victim = ts[0]
            rogue = Keypair.derive("ping-flooder")
            async with open_attacker(rogue, CHAIN, [victim.listen_addrs[0]]) as a:
                with trio.fail_after(15):
                    while not a.pubsub.peer_topics.get(TOPIC_TXS):
                        await trio.sleep(0.05)
                    await trio.sleep(1.5)  # a mesh forms on the attacker's heartbeat
                rogue_id = peer_id_of(rogue.public)
                with trio.fail_after(30):
                    i = 0
                    while rogue_id not in victim.banned_peers():
                        for _ in range(20):
                            await a.publish(TOPIC_TXS, Ping(i))
                            i += 1
                        await trio.sleep(0.05)
            got = 0
            while True:
                try:
                    msg = victim.inbound.receive_nowait()
                except trio.WouldBlock:
                    break
                got += msg.sender == rogue.public
            assert got <= SENDER_BUDGETS[0x02].burst + 10  # what the budget lets through
            for t in ts:
                for other in ts:
                    assert t.police.app_score(other.peer_id) == 0.0
                    assert other.peer_id not in t.banned_peers()

    trio.run(main)


def test_junk_votes_from_a_non_validator_are_not_delivered_and_get_it_banned() -> None:
    async def main() -> None:
        keys = swarm_keys(2, "junkvotes")
        async with open_swarm(keys, TransportConfig(chain_id=CHAIN)) as ts:
            validators = {k.public for k in keys}
            for t in ts:
                t.budgets.relevance = lambda env: judge(NodeView(5, 0, validators.__contains__), env.sender,
                                                        env.body)
            await wait_connected(ts, TOPIC_CONSENSUS, 15)
            rogue = Keypair.derive("vote-flooder")
            async with open_attacker(rogue, CHAIN, [ts[0].listen_addrs[0]]) as a:
                with trio.fail_after(15):
                    while not a.pubsub.peer_topics.get(TOPIC_CONSENSUS):
                        await trio.sleep(0.05)
                    await trio.sleep(1.5)
                with trio.fail_after(30):
                    r = 0
                    while peer_id_of(rogue.public) not in ts[0].banned_peers():
                        await a.publish(TOPIC_CONSENSUS, Vote(5, r, VoteType.PREVOTE, None, rogue.public))
                        r += 1
                        await trio.sleep(0.005)
            delivered = []
            while True:
                try:
                    delivered.append(ts[0].inbound.receive_nowait())
                except trio.WouldBlock:
                    break
            assert not [m for m in delivered if m.sender == rogue.public]
            assert ts[0].budgets.counters.junk > 0
            assert ts[1].budgets.counters.junk == 0  # nothing was forwarded to the other node
            assert ts[0].police.app_score(ts[1].peer_id) == 0.0

    trio.run(main)


def test_banning_a_peer_whose_connection_drops_meanwhile_does_not_kill_pubsub() -> None:
    """py-libp2p's teardown deleted the peer after awaiting its stream reset; when the
    dead-peer handler removed it first (our ban also disconnects), the KeyError ended
    the pubsub service and the daemon (seen twice in one adversary run)."""

    async def main() -> None:
        async with open_swarm(swarm_keys(2, "teardown"), TransportConfig(chain_id=CHAIN)) as ts:
            await wait_connected(ts, TOPIC_TXS, 15)
            pubsub, peer = ts[0].pubsub, ts[1].peer_id
            real = pubsub.peers[peer]

            class RacingStream:
                async def reset(self) -> None:
                    pubsub._handle_dead_peer(peer)  # the disconnect wins the race
                    await real.reset()

            pubsub.peers[peer] = RacingStream()  # type: ignore[assignment]
            await pubsub._teardown_if_connected(peer)  # the library's version raised KeyError
            assert peer not in pubsub.peers and peer not in pubsub.peer_queues
            await ts[0].publish(TOPIC_TXS, Ping(1))  # still running

    trio.run(main)
