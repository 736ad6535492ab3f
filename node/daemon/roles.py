"""The market roles a daemon runs, chosen by its `[roles]` config.

- validator: `ArbiterRole` (re-executes pinpointed operations and votes);
- worker: registers on the ledger with its measured capacity, then `SolverRole` and
  `VerifierRole` (verifiers are elected among registered workers);
- whistleblower: `WhistleblowerRole`, bonding the chain's minimum challenge bond;
- always a `SubmitterRole`, fed by the admin endpoint (`polnet task submit`): any
  account may buy compute, and an empty queue costs nothing.

The seed of the worker's duty secrets (protocol.market.elections: it registers the root
of one secret per verifier duty) is derived from the node key by a signature (ed25519
signatures are deterministic), so it survives restarts without a second secret file and
nobody without the key can compute it.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.capacity import Capacity
from node.config import RolesConfig
from protocol.encoding import sha256
from protocol.identity import Keypair
from protocol.market import elections
from protocol.market.params import MarketParams
from protocol.market.roles import (
    ArbiterRole,
    NodeRoles,
    RegistrarRole,
    SolverRole,
    SubmitterRole,
    VerifierRole,
    Wallet,
    WhistleblowerRole,
    _Role,
)
from protocol.market.txs import DeviceClass, RegisterWorker

#: Resend a registration that has not landed after this many blocks (gossip can lose it).
REGISTER_RETRY_BLOCKS = 10
#: Open tasks a submitter keeps in flight; the rest wait in its queue.
SUBMITTER_IN_FLIGHT = 4
MIB = 1024 * 1024


def forced_error_secret(key: Keypair, generation: int) -> bytes:
    return sha256(key.sign(b"polnet/forced-error-secret/v1\x00" + generation.to_bytes(8, "big")))


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
        seed = forced_error_secret(key, 0)
        offer = RegisterWorker(
            DeviceClass.CUDA if capacity is not None and capacity.device == "cuda" else DeviceClass.CPU,
            max(1, min(2**32 - 1, (capacity.memory_bytes if capacity else 1 << 30) // MIB)),
            max(1, capacity.flops if capacity else 10**9),
            cfg.worker_price, max(cfg.worker_stake, params.min_worker_stake),
            elections.forced_error_commitment(seed), 0, 0,
        )
        roles.append(RegistrarRole(me, Wallet(), registration=offer, retry_blocks=REGISTER_RETRY_BLOCKS))
        verifier = VerifierRole(me, Wallet(), secret=seed)
        if cfg.worker:
            roles.append(SolverRole(me, Wallet()))
        roles.append(verifier)
    if cfg.whistleblower:
        roles.append(WhistleblowerRole(me, Wallet(), bond=params.min_challenge_bond))
    submitter = SubmitterRole(me, Wallet(), max_in_flight=SUBMITTER_IN_FLIGHT)
    roles.append(submitter)
    return DaemonRoles(NodeRoles(roles), submitter)
