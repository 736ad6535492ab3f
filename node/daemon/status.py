"""The parts of `/status` that say what the node is doing: where its chain is (height,
last block age, round, catching up), whether it is registered as a worker and, if not,
why not. `polnet node status` prints them; the swarm view and operators read them.

Every value is derived from what the node already holds (the committed ledger, the
consensus core's round, the registrar role), read on the trio thread; nothing here
changes state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from node.config import RolesConfig
from node.daemon.chain import Chain
from protocol.identity import node_id
from protocol.market.roles import RegistrarRole

#: A node applying blocks whose time is this far behind its clock is replaying others'
#: history (block sync), not following the tip.
CATCHING_UP_LAG_S = 10.0
#: ... and it counts as catching up only while such blocks keep arriving.
CATCHING_UP_WINDOW_S = 10.0


class CatchUpWatch:
    """Notices a node applying old blocks: the consensus core syncs by itself and has no
    flag for it, but a block committed now whose header time is long past is one it
    fetched from peers to catch up. The daemon shows it every block (its metrics loop,
    once a second), so a chain that merely stopped is not mistaken for one being caught
    up with."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._height = -1
        self._seen_at = 0.0
        self._lag_s = 0.0

    def observe(self, height: int, block_time_ms: int | None) -> None:
        if height == self._height:
            return
        now = self._clock()
        self._height, self._seen_at = height, now
        self._lag_s = 0.0 if block_time_ms is None else max(0.0, now - block_time_ms / 1000)

    def catching_up(self) -> bool:
        recent = self._clock() - self._seen_at <= CATCHING_UP_WINDOW_S
        return recent and self._lag_s > CATCHING_UP_LAG_S


def chain_status(chain: Chain, watch: CatchUpWatch, now: float | None = None) -> dict[str, Any]:
    """Height, the last block's time and age, the consensus round and step, catching up."""
    now = time.time() if now is None else now
    node = chain.node
    last = node.last_block
    block_time = last.header.time if last is not None else None
    watch.observe(chain.height, block_time)
    return {
        "height": chain.height,
        "last_block_time_ms": block_time,
        "last_block_age_s": None if block_time is None else round(max(0.0, now - block_time / 1000), 1),
        "round": node.machine.round,
        "step": node.machine.step.name.lower(),
        "catching_up": watch.catching_up(),
        "genesis_hash": chain.genesis.hash().hex(),
        "preset": chain.genesis.preset,
    }


def registration_status(chain: Chain, roles: RolesConfig, me: bytes) -> dict[str, Any]:
    """Whether this node is a registered worker, and if not, why not (in the order an
    operator should look: role off, not enough money, waiting for the chain)."""
    if not (roles.worker or roles.verifier):
        return {"state": "off", "reason": "[roles] worker and verifier are false: this node takes no jobs"}
    view = chain.core.view
    if view is None:
        return {"state": "waiting", "reason": "no block committed yet: registration goes out with the first"}
    worker = view.market.workers.get(me)
    if worker is not None:
        return {"state": "registered", "reason": "", "stake": worker.stake, "flops": worker.flops,
                "price_per_gflop": worker.price_per_gflop, "open_jobs": worker.jobs}
    registrar = next((r for r in chain.core.roles.roles if isinstance(r, RegistrarRole)), None)
    offer = registrar.registration if registrar is not None else None
    if offer is None:
        return {"state": "unregistered", "reason": "no registration configured"}
    balance = chain.ledger.state.account(me).balance
    need = offer.stake + chain.core.fee
    if balance < need:
        return {"state": "unregistered", "reason": (
            f"balance {balance} cannot pay the worker stake {offer.stake} plus fee {chain.core.fee} "
            f"(fund {node_id(me)} or lower [roles] worker_stake)")}
    params = view.market.params
    if len(view.market.workers) >= params.max_workers:
        return {"state": "unregistered",
                "reason": f"the market's worker table is full ({params.max_workers})"}
    sent = registrar.sent_at if registrar is not None else -1
    when = f"sent at height {sent}" if sent >= 0 else "not sent yet"
    return {"state": "pending",
            "reason": f"registration {when}, not on the ledger yet (height {view.height})"}
