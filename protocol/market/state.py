"""The market's part of the ledger state: workers, tasks, disputes, the jackpot pool.

Money the market holds (stakes, escrows, challenge bonds, the jackpot) lives here, while
account balances live behind the `Accounts` interface that the ledger implements. The
supply audit is therefore `accounts.total() + market.held() + market.burned`, which must
never change except by genesis.

These are mutable in-memory structures (the ledger's state, not wire records); `market_root`
hashes a canonical plain view of them for the ledger's state root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, Protocol, TypeVar

from protocol.encoding import canonical_hash
from protocol.market.errors import InsufficientFunds
from protocol.market.params import DEVNET, MarketParams
from protocol.market.txs import DeviceClass, Verdict
from protocol.schedule.links import LinkReport


class Accounts(Protocol):
    """The ledger's balances, as the market needs them (debit/credit preserve supply
    together with the market's own holdings; the ledger implements this)."""

    def balance(self, who: bytes) -> int: ...

    def debit(self, who: bytes, amount: int) -> None: ...

    def credit(self, who: bytes, amount: int) -> None: ...

    def total(self) -> int: ...

    def bonded(self, who: bytes) -> int:
        """Stake bonded in the ledger (a staked account may challenge, validator or not)."""
        ...


class MemoryAccounts:
    """Plain balances for tests and netsim until a ledger is attached."""

    def __init__(self, balances: dict[bytes, int] | None = None,
                 bonded: dict[bytes, int] | None = None) -> None:
        self._bal: dict[bytes, int] = dict(balances or {})
        self._bonded: dict[bytes, int] = dict(bonded or {})

    def bonded(self, who: bytes) -> int:
        return self._bonded.get(who, 0)

    def balance(self, who: bytes) -> int:
        return self._bal.get(who, 0)

    def debit(self, who: bytes, amount: int) -> None:
        if amount < 0:
            raise ValueError("negative debit")
        have = self._bal.get(who, 0)
        if have < amount:
            raise InsufficientFunds(f"balance {have} < {amount}")
        self._bal[who] = have - amount

    def credit(self, who: bytes, amount: int) -> None:
        if amount < 0:
            raise ValueError("negative credit")
        self._bal[who] = self._bal.get(who, 0) + amount

    def total(self) -> int:
        return sum(self._bal.values())


class Status(IntEnum):
    """Where a task is; every non-terminal status has a deadline height."""

    OPEN = 0  # fee escrowed, waiting for a solver to be elected
    TRAINING = 1  # solver (and profiler, unless reproducible) elected
    PROVED = 2  # proof committed and profiled; verifiers elected at the next block
    COMMIT = 3  # verifiers commit H(verdict)
    REVEAL = 4  # verifiers reveal verdicts
    CHALLENGE = 5  # any staked node may challenge a verdict
    FORCED_REVEAL = 6  # forced verifiers show their secret
    DISPUTE = 7  # bisection moves between solver and one accuser
    ARBITRATION = 8  # validators vote on the single operation
    SETTLED = 9
    REFUNDED = 10


TERMINAL = frozenset({Status.SETTLED, Status.REFUNDED})


class Turn(IntEnum):
    DEFENDER = 0
    ACCUSER = 1


class GameKind(IntEnum):
    """BISECT: narrow a disputed segment to one op, re-executed by the validators.
    AVAILABILITY: a verifier could not fetch its segment; the validators try, and vote.
    CREW: a crew member's verdict is disputed; the validators fetch its record and
    re-execute its sampled segments themselves, and vote (`Game.segment` is the rank)."""

    BISECT = 0
    AVAILABILITY = 1
    CREW = 2


@dataclass(slots=True)
class Worker:
    pubkey: bytes
    device: DeviceClass
    memory_mb: int
    flops: int  # measured FLOP/s
    price_per_gflop: int
    stake: int
    secret_commit: bytes | None  # root of the worker's duty secrets (elections.SECRETS_PER_COMMIT)
    secret_height: int = 0  # when the secret was committed (must precede any beacon it meets)
    duty_index: int = 0  # next unused duty secret under `secret_commit`
    jobs: int = 0  # open duties; stake cannot leave while > 0


@dataclass(slots=True)
class VerifierSlot:
    pubkey: bytes
    commitment: bytes | None = None
    verdict: Verdict | None = None
    segment: int = 0
    beacon: bytes = b""  # the beacon at election: with the secret, decides forced errors
    elected_at: int = 0
    forced_revealed: bool = False  # its duty secret was revealed and it forced this verdict
    secret_commit: bytes = b""  # the worker's commitment in force at election (kept per duty,
    secret_index: int = 0  # so a later re-registration never orphans an older duty)
    secret_revealed: bool = False


@dataclass(frozen=True, slots=True)
class WrapRec:
    """A private task's content key wrapped to one party (`protocol.sealing`): made to the
    X25519 key the party had on record then, by `wrapper` (the submitter or a holder)."""

    recipient: bytes
    recipient_key: bytes
    wrapper: bytes
    wrap: bytes


@dataclass(slots=True)
class ProfileRec:
    profiler: bytes
    threshold_ppm: int
    spec_ok: bool


@dataclass(slots=True)
class ChallengeRec:
    challenger: bytes
    target: int  # verifier index
    claims_valid: bool  # True: the target's REJECT is wrong; False: its ACCEPT is wrong
    segment: int
    bond: int  # still held (0 once settled)
    posted: int = 0  # what the challenger posted (kept for the record)


@dataclass(frozen=True, slots=True)
class Reveal:
    """The defender's digests behind the disputed operation (see `GameReveal`): the
    step's state (weights, optimizer), the outputs of each earlier op of the step, and
    the disputed op's outputs as claimed."""

    weights: tuple[bytes, ...]
    optimizer: tuple[bytes, ...]
    prefix: tuple[tuple[bytes, ...], ...]
    claimed: tuple[bytes, ...]


@dataclass(slots=True)
class Game:
    """One bisection game over the positions of a disputed segment (steps x ops).

    The defender opens it with the segment's committed checkpoints (Merkle proofs), which
    fix `lo_hash` and `hi_hash`; both sides agree at `lo` and disagree at `hi`; each round
    the defender posts its digest at the midpoint and the accuser posts its own.
    """

    accuser: bytes
    segment: int
    lo: int
    hi: int
    lo_hash: bytes
    hi_hash: bytes
    turn: Turn = Turn.DEFENDER
    round: int = 0
    mid_hash: bytes | None = None
    votes: dict[bytes, bool] = field(default_factory=dict)  # validator -> defender right
    opened: bool = False  # the defender showed the segment's committed checkpoints
    accuser_hi: bytes = b""  # the accuser's own digest at `hi` (its claim against hi_hash)
    reveal: Reveal | None = None  # posted by the defender once one operation is left
    kind: GameKind = GameKind.BISECT


class PenaltyKind(IntEnum):
    """Why a party lost stake or a bond (the report says who lost what, and for what)."""

    SOLVER_CHEAT = 1  # the solver lost a game (or could not defend its proof)
    WRONG_VERDICT = 2  # an unforced verdict shown wrong
    IGNORED_FORCING = 3  # a forced verifier posted what it would have posted unforced
    HIDDEN_SECRET = 4  # a verifier did not reveal its duty secret
    SILENCE = 5  # a party missed its deadline
    BOND_FORFEIT = 6  # a challenge shown wrong, or a lost game


@dataclass(frozen=True, slots=True)
class Penalty:
    who: bytes
    amount: int
    kind: PenaltyKind


@dataclass(slots=True)
class ProvenProof:
    """A proof the market accepted: a task that settled valid (a later task may fine-tune
    from its final checkpoint, named by this root)."""

    task_id: bytes
    n_checkpoints: int
    steps: int
    settled_at: int


NO_BASE = b"\x00" * 32
#: Most members of one crew task (each is a separate worker with its own stake).
MAX_CREW = 64
#: A crew task's model fields (Task.model: blocks, width, context, micro_batch, micro_batches).
CREW_MODEL_FIELDS = 5


@dataclass(slots=True)
class Task:
    task_id: bytes
    submitter: bytes
    spec_hash: bytes
    gflops: int
    steps: int
    checkpoint_interval: int
    ops_per_step: int
    device: DeviceClass
    min_memory_mb: int
    reproducible: bool
    max_price_per_gflop: int
    escrow: int
    submitted_at: int
    status: Status = Status.OPEN
    deadline: int = 0
    stage_since: int = 0
    solver: bytes | None = None
    solver_price: int = 0
    profilers: list[bytes] = field(default_factory=list)  # elected for a non-reproducible task
    threshold_ppm: int | None = None
    proof_root: bytes | None = None
    verify_beacon: bytes = b""
    verifiers: list[VerifierSlot] = field(default_factory=list)
    challenges: list[ChallengeRec] = field(default_factory=list)
    accusers: list[bytes] = field(default_factory=list)  # queue of games still to play
    game: Game | None = None
    excluded: list[bytes] = field(default_factory=list)  # replaced parties, never re-elected
    replacements: int = 0
    proof_valid: bool | None = None  # decided truth, once known
    bad_segment: int | None = None  # the segment on which the solver lost a game
    taxed: bool = False
    outcome: str = ""
    winner: bytes | None = None  # the accuser whose game the solver lost: it proved the cheat
    lost: list[bytes] = field(default_factory=list)  # accusers that lost their own game
    profile_reports: list[ProfileRec] = field(default_factory=list)
    penalties: list[Penalty] = field(default_factory=list)  # every slash and forfeit, in order
    base_root: bytes = NO_BASE  # a fine-tune's proven base (see ProvenProof), else zero
    base_checkpoints: int = 0  # that proof's checkpoints and steps, copied at submit: what a
    base_steps: int = 0  # verifier checks the spec's base leaf and proof against
    key_commit: bytes = b""  # a private task's content-key commitment (empty: public)
    watchers: list[bytes] = field(default_factory=list)  # a private task's elected whistleblowers
    wraps: list[WrapRec] = field(default_factory=list)  # the content key, wrapped to each party
    unkeyed: list[bytes] = field(default_factory=list)  # parties that reported no wrap opens
    # A crew task (docs/parallel.md; 0 x 0: one solver). Its members sit in `crew` by rank
    # (stage-major), each paid at its own price; each member commits its own proof
    # (`crew_commits` by rank, b"" until it does) or says the crew stopped (`crew_aborts`).
    # Verifier slots name a rank in `segment`; `convicted` are the members whose game
    # the validators decided against them: only they are slashed.
    stages: int = 0
    data_parallel: int = 0
    crew: list[bytes] = field(default_factory=list)
    crew_prices: list[int] = field(default_factory=list)
    crew_commits: list[bytes] = field(default_factory=list)
    crew_aborts: list[bytes] = field(default_factory=list)
    convicted: list[bytes] = field(default_factory=list)
    # The crew's model for the placement's cost model (SubmitTask's model_* fields:
    # blocks, width, context, micro_batch, micro_batches); empty: ranks follow the draw.
    model: tuple[int, ...] = ()

    @property
    def private(self) -> bool:
        return self.key_commit != b""

    @property
    def is_crew(self) -> bool:
        return self.stages > 0

    @property
    def crew_size(self) -> int:
        return self.stages * self.data_parallel

    @property
    def n_segments(self) -> int:
        return max(1, -(-self.steps // self.checkpoint_interval))


V = TypeVar("V")


class LazyTable(MutableMapping[bytes, V], Generic[V]):
    """A ledger table seen as mutable objects, thawed only when touched.

    A market tx touches one task and a worker or two; thawing every task of the ledger
    for each tx (and again for every node's view) dominated a netsim run. Entries read
    are thawed once and kept (`live`), so mutations stick; `deleted` remembers removals;
    the saver writes back only those. Iteration is in key order, like the ledger's.
    """

    def __init__(self, records: dict[bytes, Any], thaw: Callable[[bytes, Any], V]) -> None:
        self.records = records
        self._thaw = thaw
        self.live: dict[bytes, V] = {}
        self.deleted: set[bytes] = set()

    def __getitem__(self, key: bytes) -> V:
        hit = self.live.get(key)
        if hit is not None:
            return hit
        if key in self.deleted or key not in self.records:
            raise KeyError(key)
        value = self.live[key] = self._thaw(key, self.records[key])
        return value

    def __setitem__(self, key: bytes, value: V) -> None:
        self.live[key] = value
        self.deleted.discard(key)

    def __delitem__(self, key: bytes) -> None:
        self[key]  # KeyError if absent
        del self.live[key]
        self.deleted.add(key)

    def __iter__(self) -> Iterator[bytes]:
        keys = (set(self.records) - self.deleted) | set(self.live)
        return iter(sorted(keys))

    def __len__(self) -> int:
        return len((set(self.records) - self.deleted) | set(self.live))

    def __contains__(self, key: object) -> bool:
        return key in self.live or (key in self.records and key not in self.deleted)

    def keys_where(self, on_record: Callable[[Any], bool], on_value: Callable[[V], bool]) -> list[bytes]:
        """Keys whose entry passes, testing the stored record where nothing was thawed."""
        out = []
        for key in self:
            hit = self.live.get(key)
            if (on_value(hit) if hit is not None else on_record(self.records[key])):
                out.append(key)
        return out


@dataclass(frozen=True, slots=True)
class CommittedLinks:
    """A worker's CommitLinks as the ledger keeps it: the reports and the height they
    landed at (placement ignores reports older than `crews.LINK_TTL_BLOCKS`)."""

    height: int
    reports: tuple[LinkReport, ...]


@dataclass(slots=True)
class MarketState:
    params: MarketParams = DEVNET
    accounts: Accounts = field(default_factory=MemoryAccounts)
    height: int = 0
    beacon: bytes = b"\x00" * 32
    validators: dict[bytes, int] = field(default_factory=dict)
    workers: MutableMapping[bytes, Worker] = field(default_factory=dict)
    tasks: MutableMapping[bytes, Task] = field(default_factory=dict)
    jackpot: int = 0
    burned: int = 0
    proven: MutableMapping[bytes, ProvenProof] = field(default_factory=dict)  # proof root -> record
    #: Every account's X25519 public key for private tasks (worker registration, SetEncKey).
    enc_keys: MutableMapping[bytes, bytes] = field(default_factory=dict)
    #: Every worker's last committed link measurements (CommitLinks), which crew
    #: placement reads.
    links: MutableMapping[bytes, CommittedLinks] = field(default_factory=dict)
    #: Crew seatings the current block may still compute (blocks.end_block sets it; not
    #: state: it never outlives the block, and is not hashed).
    seatings_left: int = 0

    def held(self) -> int:
        """Money in the market's custody (it must match the ledger's market accounts)."""
        stakes = sum(w.stake for w in self.workers.values())
        escrows = sum(t.escrow for t in self.tasks.values())
        bonds = sum(c.bond for t in self.tasks.values() for c in t.challenges)
        return stakes + escrows + bonds + self.jackpot

    def supply(self) -> int:
        return self.accounts.total() + self.held() + self.burned

    def open_tasks(self) -> Iterable[Task]:
        return (self.tasks[k] for k in self.task_keys_where(lambda t: t.status not in TERMINAL))

    def task_keys_where(self, pred: Callable[[Any], bool]) -> list[bytes]:
        """Task ids whose task passes `pred` (which reads only fields records share)."""
        if isinstance(self.tasks, LazyTable):
            return self.tasks.keys_where(pred, pred)
        return [k for k in sorted(self.tasks) if pred(self.tasks[k])]


def _plain(value: Any) -> Any:
    if isinstance(value, IntEnum):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return [_plain(getattr(value, f)) for f in value.__dataclass_fields__]
    return value


def market_root(state: MarketState) -> bytes:
    """Hash of the market's canonical state (workers and tasks sorted by key)."""
    workers = [_plain(state.workers[k]) for k in sorted(state.workers)]
    tasks = [_plain(state.tasks[k]) for k in sorted(state.tasks)]
    keys = [[k, state.enc_keys[k]] for k in sorted(state.enc_keys)]
    links = [[k, _plain(state.links[k])] for k in sorted(state.links)]
    return canonical_hash([state.height, state.jackpot, state.burned, workers, tasks, keys, links])
