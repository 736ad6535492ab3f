"""MarketNode, the composite core: roles see committed blocks, their txs keep flowing."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

from protocol.commands import (
    TOPIC_ADVERTS,
    TOPIC_TXS,
    Command,
    Event,
    MessageReceived,
    Publish,
    SetTimer,
    Tick,
    TimerFired,
)
from protocol.consensus.node import ConsensusConfig
from protocol.identity import Keypair
from protocol.ledger.genesis import Genesis, GenesisAccount
from protocol.ledger.ledger import Ledger
from protocol.ledger.params import preset
from protocol.market import elections
from protocol.market.adverts import AdvertBook
from protocol.market.chain import market_genesis_state
from protocol.market.messages import CapacityAdvert
from protocol.market.node import MarketNode
from protocol.market.params import DEVNET
from protocol.market.roles import ChainView, NodeRoles, RegistrarRole, Wallet, _Role
from protocol.market.state import MarketState
from protocol.market.txs import DeviceClass, RegisterWorker

KEY = Keypair.derive("market-node-test/0")
CHAIN = "market-node-test"


@dataclass
class Scripted(_Role):
    """Publishes a scripted list of txs at the first view, then records what it sees."""

    script: list[Any] = field(default_factory=list)
    views: list[ChainView] = field(default_factory=list)

    def handle(self, now: int, event: Any) -> list[Command]:
        if isinstance(event, ChainView):
            self.views.append(event)
            out = [Publish(TOPIC_TXS, tx) for tx in self.script]
            self.script = []
            return out
        return []


def register(stake: int) -> RegisterWorker:
    secret = elections.forced_error_commitment(b"x")
    return RegisterWorker(DeviceClass.CPU, 1024, 10**12, 5, stake, secret, 0, 0)


def drive(node: MarketNode, until_ms: int) -> list[Command]:
    """A one-node shell: timers in time order; gossip goes nowhere (one validator)."""
    timers: list[tuple[int, int, str]] = []
    seq = 0
    sent: list[Command] = []
    pending: list[tuple[int, Event]] = [(0, Tick())]
    while pending:
        now, event = pending.pop()
        for cmd in node.handle(now, event):
            sent.append(cmd)
            if isinstance(cmd, SetTimer):
                seq += 1
                heapq.heappush(timers, (cmd.at, seq, cmd.key))
        if not pending and timers:
            at, _, key = heapq.heappop(timers)
            if at <= until_ms:
                pending.append((at, TimerFired(key)))
    return sent


def make_node(role: _Role) -> MarketNode:
    g = Genesis(CHAIN, preset("devnet"), 0, (GenesisAccount(KEY.public, 10**9, 1_000),))
    state = market_genesis_state(g, DEVNET)
    ccfg = ConsensusConfig(chain_id=CHAIN, genesis_validators=Ledger(state.copy()).validators(),
                           block_interval_ms=1_000)
    return MarketNode.create(state, ccfg, KEY, NodeRoles([role]), audit=True)


def test_a_tx_that_cannot_apply_is_dropped_and_the_next_one_still_commits() -> None:
    role = Scripted(KEY.public, Wallet(), script=[register(stake=10**12), register(stake=50_000)])
    node = make_node(role)
    sent = drive(node, 5_000)
    gossiped = [c for c in sent if isinstance(c, Publish) and c.topic == TOPIC_TXS]
    assert len(gossiped) == 1 and type(gossiped[0].msg) is bytes  # sealed envelope bytes
    market: MarketState = node.market
    assert market.workers[KEY.public].stake == 50_000
    assert node.ledger.state.account(KEY.public).nonce == 1


def test_roles_see_every_committed_height_in_order() -> None:
    role = Scripted(KEY.public, Wallet())
    node = make_node(role)
    drive(node, 5_000)
    heights = [v.height for v in role.views]
    assert heights == sorted(set(heights)) and len(heights) >= 3


def test_a_worker_registered_by_tx_gossips_capacity_adverts_every_half_ttl() -> None:
    role = RegistrarRole(KEY.public, Wallet(), registration=register(stake=50_000))
    node = make_node(role)
    sent = drive(node, 70_000)
    assert KEY.public in node.market.workers  # registered by transaction, not at genesis
    adverts = [c.msg for c in sent if isinstance(c, Publish) and c.topic == TOPIC_ADVERTS]
    ttl = DEVNET.advert_max_ttl_ms
    assert len(adverts) >= 2 and all(a.expires_at - a.issued_at == ttl for a in adverts)
    assert all(b.issued_at - a.issued_at >= ttl // 2 for a, b in pairwise(adverts))
    assert adverts[0].flops == 10**12 and adverts[0].free_slots == DEVNET.max_jobs_per_worker


def test_advert_book_keeps_live_adverts_of_registered_workers_only() -> None:
    ttl = DEVNET.advert_max_ttl_ms
    book = AdvertBook(ttl, capacity=2)
    ad = CapacityAdvert(DeviceClass.CPU, 1024, 10**12, 5, 4, 1_000, 1_000 + ttl)
    assert not book.offer(1_000, b"a" * 32, ad, registered=False)  # not a worker: spam
    assert not book.offer(1_000, b"a" * 32, replace(ad, expires_at=1_000 + ttl + 1), True)  # TTL too long
    assert book.offer(1_000, b"a" * 32, ad, True)
    assert not book.offer(1_500, b"a" * 32, replace(ad, issued_at=900), True)  # older than held
    assert book.offer(1_000, b"b" * 32, replace(ad, expires_at=1_000 + ttl // 2), True)
    assert book.offer(1_000, b"c" * 32, ad, True)  # full: the soonest to expire makes room
    assert set(book.live(1_000)) == {b"a" * 32, b"c" * 32}
    assert book.live(1_000 + ttl) == {}  # expired adverts go on their own


def test_node_ignores_adverts_from_non_workers_and_keeps_workers_adverts() -> None:
    role = RegistrarRole(KEY.public, Wallet(), registration=register(stake=50_000))
    node = make_node(role)
    drive(node, 5_000)
    stranger = Keypair.derive("market-node-test/stranger").public
    ad = CapacityAdvert(DeviceClass.CPU, 1024, 10**12, 5, 4, 5_000, 5_000 + 1_000)
    assert node.handle(5_000, MessageReceived(TOPIC_ADVERTS, stranger, ad, b"")) == []
    assert stranger not in node.adverts.live(5_000) and KEY.public in node.adverts.live(5_000)
