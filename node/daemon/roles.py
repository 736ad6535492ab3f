"""The market roles a daemon runs, from its `[roles]` config, through the one assembly
both shells use (`protocol.market.assembly.roles_for`).

- validator: arbitrates disputes (re-executes pinpointed operations and votes);
- worker: registers on the ledger with its measured capacity, then solves and verifies
  when elected (verifier: verifies only);
- whistleblower: re-checks verdicts and challenges wrong ones;
- adversary: a hostile role for demos and tests (`lazy_verifier`, `false_challenger`,
  `bad_wrapper`);
- always a submitter, fed by the admin endpoint (`polnet task submit`): any account may
  buy compute, and an empty queue costs nothing.

The seed of the worker's duty secrets (protocol.market.elections: it registers the root
of one secret per verifier duty) is derived from the node key by a signature (ed25519
signatures are deterministic), so it survives restarts without a second secret file and
nobody without the key can compute it.
"""

from __future__ import annotations

from node.capacity import Capacity
from node.config import RolesConfig
from protocol.encoding import sha256
from protocol.identity import Keypair
from protocol.market import elections
from protocol.market.assembly import AssembledRoles, Duties, roles_for
from protocol.market.params import MarketParams
from protocol.market.txs import DeviceClass, RegisterWorker

#: Resend a registration that has not landed after this many blocks (gossip can lose it).
REGISTER_RETRY_BLOCKS = 10
MIB = 1024 * 1024


def forced_error_secret(key: Keypair, generation: int) -> bytes:
    return sha256(key.sign(b"polnet/forced-error-secret/v1\x00" + generation.to_bytes(8, "big")))


def registration(
    cfg: RolesConfig, key: Keypair, params: MarketParams, capacity: Capacity | None
) -> RegisterWorker:
    """The worker's offer: capacity as measured, its price and stake, its duty-secret root."""
    return RegisterWorker(
        DeviceClass.CUDA if capacity is not None and capacity.device == "cuda" else DeviceClass.CPU,
        max(1, min(2**32 - 1, (capacity.memory_bytes if capacity else 1 << 30) // MIB)),
        max(1, capacity.flops if capacity else 10**9),
        cfg.worker_price, max(cfg.worker_stake, params.min_worker_stake),
        elections.forced_error_commitment(forced_error_secret(key, 0)), 0, 0,
    )


def build_roles(
    cfg: RolesConfig, key: Keypair, params: MarketParams, capacity: Capacity | None
) -> AssembledRoles:
    duties = Duties(validator=cfg.validator, worker=cfg.worker, verifier=cfg.verifier,
                    whistleblower=cfg.whistleblower, adversary=cfg.adversary)
    works = cfg.worker or cfg.verifier or cfg.adversary == "lazy_verifier"
    offer = registration(cfg, key, params, capacity) if works else None
    return roles_for(key.public, duties, secret=forced_error_secret(key, 0), registration=offer,
                     register_retry_blocks=REGISTER_RETRY_BLOCKS)
