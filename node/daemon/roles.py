"""The market roles a daemon runs, chosen by its `[roles]` config.

- validator: `ArbiterRole` (re-executes pinpointed operations and votes);
- worker: registers on the ledger with its measured capacity, then `SolverRole` and
  `VerifierRole` (verifiers are elected among registered workers);
- whistleblower: `WhistleblowerRole`, bonding the chain's minimum challenge bond;
- always a `SubmitterRole`, fed by the admin endpoint (`polnet task submit`): any
  account may buy compute, and an empty queue costs nothing.

The forced-error secret is derived from the node key by a signature (ed25519 signatures
are deterministic), so it survives restarts without a second secret file and nobody
without the key can compute it. Revealing a forced error retires the secret; the
registrar then commits the next one (a counter in the signed message).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from node.capacity import Capacity
from node.config import RolesConfig
from protocol.commands import Command
from protocol.encoding import sha256
from protocol.identity import Keypair
from protocol.market import elections
from protocol.market.params import MarketParams
from protocol.market.roles import (
    ArbiterRole,
    NodeRoles,
    SolverRole,
    SubmitterRole,
    VerifierRole,
    Wallet,
    WhistleblowerRole,
    _Role,
)
from protocol.market.state import MarketState
from protocol.market.txs import DeviceClass, RegisterWorker

#: Resend a registration that has not landed after this many blocks (gossip can lose it).
REGISTER_RETRY_BLOCKS = 10
#: Open tasks a submitter keeps in flight; the rest wait in its queue.
SUBMITTER_IN_FLIGHT = 4
MIB = 1024 * 1024


def forced_error_secret(key: Keypair, generation: int) -> bytes:
    return sha256(key.sign(b"polnet/forced-error-secret/v1\x00" + generation.to_bytes(8, "big")))


@dataclass
class RegistrarRole(_Role):
    """Keeps this worker registered with a live forced-error secret."""

    key: Keypair | None = None
    verifier: VerifierRole | None = None
    offer: RegisterWorker | None = None
    generation: int = 0
    sent_at: int = -(10**9)

    def on_view(self, market: MarketState) -> list[Command]:
        assert self.key is not None and self.verifier is not None and self.offer is not None
        worker = market.workers.get(self.me)
        if worker is not None and worker.secret_commit is not None:
            self._adopt(worker.secret_commit)
            return []
        if market.height - self.sent_at < REGISTER_RETRY_BLOCKS:
            return []
        if worker is not None:  # the secret was revealed: commit the next one
            self.generation += 1
        secret = forced_error_secret(self.key, self.generation)
        self.sent_at = market.height
        self.verifier.secret = secret
        stake = 0 if worker is not None else self.offer.stake
        commit = elections.forced_error_commitment(secret)
        tx = replace(self.offer, stake=stake, secret_commit=commit)
        return self._publish(tx)

    def _adopt(self, commit: bytes) -> None:
        """After a restart: find which generation the ledger holds (bounded search)."""
        assert self.key is not None and self.verifier is not None
        for gen in range(self.generation, self.generation + 64):
            secret = forced_error_secret(self.key, gen)
            if elections.forced_error_commitment(secret) == commit:
                self.generation, self.verifier.secret = gen, secret
                return


@dataclass
class DaemonRoles:
    roles: NodeRoles
    submitter: SubmitterRole


def build_roles(
    cfg: RolesConfig, key: Keypair, params: MarketParams, capacity: Capacity | None
) -> DaemonRoles:
    me = key.public
    roles: list[_Role] = []
    if cfg.validator:
        roles.append(ArbiterRole(me, Wallet()))
    if cfg.worker or cfg.verifier:
        verifier = VerifierRole(me, Wallet(), secret=forced_error_secret(key, 0))
        offer = RegisterWorker(
            DeviceClass.CUDA if capacity is not None and capacity.device == "cuda" else DeviceClass.CPU,
            max(1, min(2**32 - 1, (capacity.memory_bytes if capacity else 1 << 30) // MIB)),
            max(1, capacity.flops if capacity else 10**9),
            cfg.worker_price, max(cfg.worker_stake, params.min_worker_stake), b"\0" * 32, 0, 0,
        )
        roles.append(RegistrarRole(me, Wallet(), key=key, verifier=verifier, offer=offer))
        if cfg.worker:
            roles.append(SolverRole(me, Wallet()))
        roles.append(verifier)
    if cfg.whistleblower:
        roles.append(WhistleblowerRole(me, Wallet(), bond=params.min_challenge_bond))
    submitter = SubmitterRole(me, Wallet(), max_in_flight=SUBMITTER_IN_FLIGHT)
    roles.append(submitter)
    return DaemonRoles(NodeRoles(roles), submitter)
