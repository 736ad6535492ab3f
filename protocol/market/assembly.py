"""Building a node's market roles and a task's SubmitTask, once, for every shell.

netsim, the daemon and the CLI each used to assemble these themselves, and the copies
drifted (a shell that builds its roles differently is testing another market). So the
role set a node runs follows from its `Duties` here, adversaries included, and a task's
SubmitTask follows from its spec here: the declared work is the spec's own estimate,
the op count its own dataflow, the device and reproducibility its own profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.market.adversaries import ADVERSARY_ROLES, BadWrapper, FalseChallenger, LazyVerifier
from protocol.market.courier import KeyCourierRole
from protocol.market.params import GFLOP
from protocol.market.roles import (
    ArbiterRole,
    NodeRoles,
    RegistrarRole,
    Role,
    SolverRole,
    SubmitterRole,
    VerifierRole,
    WhistleblowerRole,
)
from protocol.market.state import NO_BASE
from protocol.market.txs import DeviceClass, RegisterWorker, SubmitTask
from protocol.pol.flops import estimate
from protocol.pol.ops import step_ops
from protocol.pol.spec import BaseKind, TaskSpec
from protocol.pol.spec import DeviceClass as SpecDevice
from protocol.records import record_hash

#: Open tasks one submitter keeps in flight by default; the rest wait in its queue.
SUBMITTER_IN_FLIGHT = 4
#: Resend a registration that has not landed after this many blocks (gossip can lose it).
REGISTER_RETRY_BLOCKS = 5
#: Memory a task asks of its workers when the spec states none.
DEFAULT_MIN_MEMORY_MB = 1_024


@dataclass(frozen=True, slots=True)
class Duties:
    """What one node does in the market.

    validator: arbitrates disputes (re-executes the one pinpointed op and votes).
    worker: trains when elected (solver) and verifies; `verifier`: verifies only.
    whistleblower: re-checks verdicts and challenges wrong ones.
    adversary: "" (honest), or one of `ADVERSARY_ROLES`: a "lazy_verifier" worker
    accepts without checking, a "false_challenger" challenges every ACCEPT unchecked.
    """

    validator: bool = False
    worker: bool = False
    verifier: bool = False
    whistleblower: bool = False
    submitter: bool = True
    adversary: str = ""

    def __post_init__(self) -> None:
        if self.adversary and self.adversary not in ADVERSARY_ROLES:
            raise ValueError(f"unknown adversary {self.adversary!r}; known: {', '.join(ADVERSARY_ROLES)}")


@dataclass
class AssembledRoles:
    roles: NodeRoles
    submitter: SubmitterRole | None


def roles_for(
    me: bytes,
    duties: Duties,
    *,
    secret: bytes = b"",
    registration: RegisterWorker | None = None,
    queue: Sequence[SubmitTask] = (),
    max_in_flight: int = SUBMITTER_IN_FLIGHT,
    register_retry_blocks: int = REGISTER_RETRY_BLOCKS,
) -> AssembledRoles:
    """The role machines of one node. `secret` seeds a verifier's duty secrets (their
    root is in `registration`); a worker without `registration` is registered already."""
    roles: list[Role] = []
    if duties.validator:
        roles.append(ArbiterRole(me))
    verifies = duties.worker or duties.verifier or duties.adversary == "lazy_verifier"
    if verifies and registration is not None:
        roles.append(RegistrarRole(me, registration=registration, retry_blocks=register_retry_blocks))
    if duties.worker:
        roles.append(SolverRole(me))
    if verifies:
        verifier = LazyVerifier if duties.adversary == "lazy_verifier" else VerifierRole
        roles.append(verifier(me, secret=secret))
    if duties.whistleblower:
        roles.append(WhistleblowerRole(me))
    elif duties.worker:  # a worker watches the private tasks it is elected to watch
        roles.append(WhistleblowerRole(me, private_only=True))
    if duties.adversary == "false_challenger":
        roles.append(FalseChallenger(me))
    submitter = None
    if duties.submitter:
        submitter = SubmitterRole(me, queue=list(queue), max_in_flight=max_in_flight)
        roles.append(submitter)
    if roles:  # any party may come to hold a private task's key (protocol.market.wraps)
        roles.append(BadWrapper(me) if duties.adversary == "bad_wrapper" else KeyCourierRole(me))
    return AssembledRoles(NodeRoles(roles), submitter)


def declared_gflops(spec: TaskSpec) -> int:
    """A task's declared work: the spec's own FLOPs estimate in GFLOP, rounded up."""
    return max(1, -(-estimate(spec).total // GFLOP))


def submit_for(
    spec: TaskSpec,
    *,
    max_price_per_gflop: int,
    salt: int,
    gflops: int | None = None,
    min_memory_mb: int = DEFAULT_MIN_MEMORY_MB,
) -> SubmitTask:
    """The SubmitTask for `spec`: work, shape, device and reproducibility from the spec,
    and the proof root of its base when it fine-tunes a proven one (the ledger checks it
    names an accepted proof). `gflops` overrides the estimate (netsim's synthetic sweeps
    declare the economics of a big task over a tiny spec)."""
    base = spec.base
    base_root = base.proof_root if base is not None and base.kind is BaseKind.PROVEN else NO_BASE
    device = DeviceClass.CUDA if spec.profile.device is SpecDevice.CUDA else DeviceClass.CPU
    reproducible = spec.profile.deterministic and spec.profile.device is SpecDevice.CPU
    work = declared_gflops(spec) if gflops is None else gflops
    return SubmitTask(record_hash(spec), work, spec.steps, spec.checkpoint_interval, len(step_ops(spec)),
                      device, min_memory_mb, reproducible, max_price_per_gflop, salt, base_root, 0, 0)
