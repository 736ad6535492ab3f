"""MarketNode, the composite core: roles see committed blocks, their txs keep flowing."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from protocol.commands import TOPIC_TXS, Command, Event, Publish, SetTimer, Tick, TimerFired
from protocol.consensus.node import ConsensusConfig
from protocol.identity import Keypair
from protocol.ledger.genesis import Genesis, GenesisAccount
from protocol.ledger.ledger import Ledger
from protocol.ledger.params import preset
from protocol.market import elections
from protocol.market.chain import market_genesis_state
from protocol.market.node import MarketNode
from protocol.market.params import DEVNET
from protocol.market.roles import ChainView, NodeRoles, Wallet, _Role
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


def make_node(role: Scripted) -> MarketNode:
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
