"""The market's state as ledger table records, and the lossless mapping to `MarketState`.

The market rules are written against the mutable `MarketState` (clearer rules, and the
property tests already pin them). On the real ledger the truth is these frozen records
in the ledger's tables, because only there is the state journaled (a failed tx leaves
nothing behind), hashed into the state root, and snapshotted by node/storage. `thaw`
builds a `MarketState` from the tables, the rule runs, and `freeze` writes back only the
entries whose record changed. The mapping must round-trip exactly (a test pins it), or
a node that reloads from disk would disagree with one that never restarted.

Tables (keys): `market/worker` (pubkey), `market/task` (task id), `market/enckey`
(pubkey: its X25519 key for private tasks), `market/links` (pubkey: its last committed
link measurements), `market/meta` and
`market/params` (singletons). No record holds value: the tokens the books describe sit
in the ledger pool `market` (see `ledger_bridge`), so `audit_supply` covers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.market.params import MarketParams
from protocol.market.state import (
    CREW_MODEL_FIELDS,
    MAX_CREW,
    Accounts,
    ChallengeRec,
    CommittedLinks,
    Game,
    GameKind,
    LazyTable,
    MarketState,
    Penalty,
    PenaltyKind,
    ProfileRec,
    ProvenProof,
    Reveal,
    Status,
    Task,
    Turn,
    VerifierSlot,
    Worker,
    WrapRec,
)
from protocol.market.txs import (
    KEY_BYTES,
    MAX_REVEAL_OPS,
    MAX_REVEAL_TENSORS,
    WRAP_BYTES,
    DeviceClass,
    OptKey,
    Verdict,
)
from protocol.pol.ops import MAX_OP_OUTPUTS
from protocol.schedule.links import MAX_LINKS_PER_ADVERT, LinkReport
from protocol.schema import U8, U16, U32, U64, Hash32, Len, PubKey, ShortBytes, Text, Trailing

WORKERS = "market/worker"
TASKS = "market/task"
PROVEN = "market/proven"
ENC_KEYS = "market/enckey"
LINKS = "market/links"
META = "market/meta"
PARAMS = "market/params"
SINGLETON = b""
#: Bounds of the per-task lists (the rules cap them lower: verifier_count plus
#: replacements, max_challenges_per_task, the excluded parties of bounded replacements).
MAX_SLOTS = 64
MAX_CHALLENGES = 64
MAX_EXCLUDED = 128
MAX_VOTES = 256
#: Penalties of one task: each party at most once or twice (silence, then a judgement).
MAX_PENALTIES = 512
#: Key wraps of one private task: each party (verifiers, profilers, watchers, solver and
#: the validators of its games, with replacements) from at most a few wrappers.
MAX_WRAPS = 512


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    device: DeviceClass
    memory_mb: U32
    flops: U64
    price_per_gflop: U64
    stake: U64
    secret_commit: Hash32 | None
    secret_height: U64
    duty_index: U32
    jobs: U32


@dataclass(frozen=True, slots=True)
class SlotRecord:
    pubkey: PubKey
    commitment: Hash32 | None
    verdict: Verdict | None
    segment: U32
    beacon: ShortBytes
    elected_at: U64
    forced_revealed: bool
    secret_commit: ShortBytes
    secret_index: U32
    secret_revealed: bool


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    profiler: PubKey
    threshold_ppm: U32
    spec_ok: bool


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    challenger: PubKey
    target: U8
    claims_valid: bool
    segment: U32
    bond: U64
    posted: U64


@dataclass(frozen=True, slots=True)
class OutputsRecord:
    digests: Annotated[tuple[Hash32, ...], Len(1, MAX_OP_OUTPUTS)]


@dataclass(frozen=True, slots=True)
class RevealRecord:
    weights: Annotated[tuple[Hash32, ...], Len(1, MAX_REVEAL_TENSORS)]
    optimizer: Annotated[tuple[Hash32, ...], Len(0, MAX_REVEAL_TENSORS)]
    prefix: Annotated[tuple[OutputsRecord, ...], Len(0, MAX_REVEAL_OPS)]
    claimed: OutputsRecord


@dataclass(frozen=True, slots=True)
class GameRecord:
    accuser: PubKey
    segment: U32
    lo: U64
    hi: U64
    lo_hash: ShortBytes
    hi_hash: ShortBytes
    turn: Turn
    round: U16
    mid_hash: Hash32 | None
    votes: Annotated[tuple[tuple[PubKey, bool], ...], Len(0, MAX_VOTES)]
    opened: bool
    accuser_hi: ShortBytes
    reveal: RevealRecord | None
    kind: GameKind


@dataclass(frozen=True, slots=True)
class PenaltyRecord:
    who: PubKey
    amount: U64
    kind: PenaltyKind


@dataclass(frozen=True, slots=True)
class WrapRecord:
    recipient: PubKey
    recipient_key: Annotated[bytes, Len(KEY_BYTES, KEY_BYTES)]
    wrapper: PubKey
    wrap: Annotated[bytes, Len(WRAP_BYTES, WRAP_BYTES)]


@dataclass(frozen=True, slots=True)
class EncKeyRecord:
    key: Annotated[bytes, Len(KEY_BYTES, KEY_BYTES)]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    submitter: PubKey
    spec_hash: Hash32
    gflops: U64
    steps: U32
    checkpoint_interval: U32
    ops_per_step: U16
    device: DeviceClass
    min_memory_mb: U32
    reproducible: bool
    max_price_per_gflop: U64
    escrow: U64
    submitted_at: U64
    status: Status
    deadline: U64
    stage_since: U64
    solver: PubKey | None
    solver_price: U64
    profilers: Annotated[tuple[PubKey, ...], Len(0, MAX_SLOTS)]
    threshold_ppm: U32 | None
    proof_root: Hash32 | None
    verify_beacon: ShortBytes
    verifiers: Annotated[tuple[SlotRecord, ...], Len(0, MAX_SLOTS)]
    challenges: Annotated[tuple[ChallengeRecord, ...], Len(0, MAX_CHALLENGES)]
    accusers: Annotated[tuple[PubKey, ...], Len(0, MAX_CHALLENGES + MAX_SLOTS)]
    game: GameRecord | None
    excluded: Annotated[tuple[PubKey, ...], Len(0, MAX_EXCLUDED)]
    replacements: U8
    proof_valid: bool | None
    bad_segment: U32 | None
    taxed: bool
    outcome: Text
    winner: PubKey | None
    lost: Annotated[tuple[PubKey, ...], Len(0, MAX_CHALLENGES + MAX_SLOTS)]
    profile_reports: Annotated[tuple[ProfileRecord, ...], Len(0, MAX_SLOTS)]
    penalties: Annotated[tuple[PenaltyRecord, ...], Len(0, MAX_PENALTIES)]
    base_root: Hash32
    base_checkpoints: U32
    base_steps: U32
    key_commit: Annotated[OptKey, Trailing()] = b""
    watchers: Annotated[tuple[PubKey, ...], Len(0, MAX_SLOTS), Trailing()] = ()
    wraps: Annotated[tuple[WrapRecord, ...], Len(0, MAX_WRAPS), Trailing()] = ()
    unkeyed: Annotated[tuple[PubKey, ...], Len(0, MAX_EXCLUDED), Trailing()] = ()
    stages: Annotated[U8, Trailing()] = 0
    data_parallel: Annotated[U8, Trailing()] = 0
    crew: Annotated[tuple[PubKey, ...], Len(0, MAX_CREW), Trailing()] = ()
    crew_prices: Annotated[tuple[U64, ...], Len(0, MAX_CREW), Trailing()] = ()
    crew_commits: Annotated[tuple[ShortBytes, ...], Len(0, MAX_CREW), Trailing()] = ()
    crew_aborts: Annotated[tuple[PubKey, ...], Len(0, MAX_CREW), Trailing()] = ()
    convicted: Annotated[tuple[PubKey, ...], Len(0, MAX_CREW), Trailing()] = ()
    model: Annotated[tuple[U16, ...], Len(0, CREW_MODEL_FIELDS), Trailing()] = ()


@dataclass(frozen=True, slots=True)
class LinksRecord:
    height: U64
    reports: Annotated[tuple[LinkReport, ...], Len(1, MAX_LINKS_PER_ADVERT)]


@dataclass(frozen=True, slots=True)
class ProvenRecord:
    task_id: Hash32
    n_checkpoints: U32
    steps: U32
    settled_at: U64


@dataclass(frozen=True, slots=True)
class MetaRecord:
    jackpot: U64
    burned: U64


# --- freeze: MarketState -> records ------------------------------------------------------------


def freeze_worker(w: Worker) -> WorkerRecord:
    return WorkerRecord(w.device, w.memory_mb, w.flops, w.price_per_gflop, w.stake, w.secret_commit,
                        w.secret_height, w.duty_index, w.jobs)


def _freeze_slot(s: VerifierSlot) -> SlotRecord:
    return SlotRecord(s.pubkey, s.commitment, s.verdict, s.segment, s.beacon, s.elected_at, s.forced_revealed,
                      s.secret_commit, s.secret_index, s.secret_revealed)


def _freeze_profile(p: ProfileRec) -> ProfileRecord:
    return ProfileRecord(p.profiler, p.threshold_ppm, p.spec_ok)


def _freeze_challenge(c: ChallengeRec) -> ChallengeRecord:
    return ChallengeRecord(c.challenger, c.target, c.claims_valid, c.segment, c.bond, c.posted)


def _freeze_game(g: Game | None) -> GameRecord | None:
    if g is None:
        return None
    votes = tuple(sorted(g.votes.items()))
    reveal = None
    if g.reveal is not None:
        r = g.reveal
        reveal = RevealRecord(r.weights, r.optimizer, tuple(OutputsRecord(o) for o in r.prefix),
                              OutputsRecord(r.claimed))
    return GameRecord(g.accuser, g.segment, g.lo, g.hi, g.lo_hash, g.hi_hash, g.turn, g.round, g.mid_hash,
                      votes, g.opened, g.accuser_hi, reveal, g.kind)


def freeze_task(t: Task) -> TaskRecord:
    return TaskRecord(
        t.submitter, t.spec_hash, t.gflops, t.steps, t.checkpoint_interval, t.ops_per_step, t.device,
        t.min_memory_mb, t.reproducible, t.max_price_per_gflop, t.escrow, t.submitted_at, t.status,
        t.deadline, t.stage_since, t.solver, t.solver_price, tuple(t.profilers), t.threshold_ppm,
        t.proof_root,
        t.verify_beacon, tuple(_freeze_slot(s) for s in t.verifiers),
        tuple(_freeze_challenge(c) for c in t.challenges), tuple(t.accusers), _freeze_game(t.game),
        tuple(t.excluded), t.replacements, t.proof_valid, t.bad_segment, t.taxed, t.outcome, t.winner,
        tuple(t.lost), tuple(_freeze_profile(p) for p in t.profile_reports),
        tuple(PenaltyRecord(p.who, p.amount, p.kind) for p in t.penalties),
        t.base_root, t.base_checkpoints, t.base_steps, t.key_commit, tuple(t.watchers),
        tuple(WrapRecord(w.recipient, w.recipient_key, w.wrapper, w.wrap) for w in t.wraps), tuple(t.unkeyed),
        t.stages, t.data_parallel, tuple(t.crew), tuple(t.crew_prices), tuple(t.crew_commits),
        tuple(t.crew_aborts), tuple(t.convicted), t.model,
    )


# --- thaw: records -> MarketState --------------------------------------------------------------


def thaw_worker(key: bytes, r: WorkerRecord) -> Worker:
    return Worker(key, r.device, r.memory_mb, r.flops, r.price_per_gflop, r.stake, r.secret_commit,
                  r.secret_height, r.duty_index, r.jobs)


def _thaw_slot(r: SlotRecord) -> VerifierSlot:
    return VerifierSlot(r.pubkey, r.commitment, r.verdict, r.segment, r.beacon, r.elected_at,
                        r.forced_revealed, r.secret_commit, r.secret_index, r.secret_revealed)


def _thaw_game(r: GameRecord | None) -> Game | None:
    if r is None:
        return None
    reveal = None
    if r.reveal is not None:
        v = r.reveal
        reveal = Reveal(v.weights, v.optimizer, tuple(o.digests for o in v.prefix), v.claimed.digests)
    return Game(r.accuser, r.segment, r.lo, r.hi, r.lo_hash, r.hi_hash, r.turn, r.round, r.mid_hash,
                dict(r.votes), r.opened, r.accuser_hi, reveal, r.kind)


def thaw_task(key: bytes, r: TaskRecord) -> Task:
    return Task(
        key, r.submitter, r.spec_hash, r.gflops, r.steps, r.checkpoint_interval, r.ops_per_step, r.device,
        r.min_memory_mb, r.reproducible, r.max_price_per_gflop, r.escrow, r.submitted_at, r.status,
        r.deadline, r.stage_since, r.solver, r.solver_price, list(r.profilers), r.threshold_ppm, r.proof_root,
        r.verify_beacon, [_thaw_slot(s) for s in r.verifiers],
        [ChallengeRec(c.challenger, c.target, c.claims_valid, c.segment, c.bond, c.posted)
         for c in r.challenges],
        list(r.accusers), _thaw_game(r.game), list(r.excluded), r.replacements, r.proof_valid,
        r.bad_segment, r.taxed, r.outcome, r.winner, list(r.lost),
        [ProfileRec(p.profiler, p.threshold_ppm, p.spec_ok) for p in r.profile_reports],
        [Penalty(p.who, p.amount, p.kind) for p in r.penalties],
        r.base_root, r.base_checkpoints, r.base_steps, r.key_commit, list(r.watchers),
        [WrapRec(w.recipient, w.recipient_key, w.wrapper, w.wrap) for w in r.wraps], list(r.unkeyed),
        r.stages, r.data_parallel, list(r.crew), list(r.crew_prices), list(r.crew_commits),
        list(r.crew_aborts), list(r.convicted), tuple(r.model),
    )


def freeze_enc_key(key: bytes) -> EncKeyRecord:
    return EncKeyRecord(key)


def thaw_enc_key(account: bytes, r: EncKeyRecord) -> bytes:
    return r.key


def freeze_links(links: CommittedLinks) -> LinksRecord:
    return LinksRecord(links.height, links.reports)


def thaw_links(worker: bytes, r: LinksRecord) -> CommittedLinks:
    return CommittedLinks(r.height, r.reports)


def freeze_proven(p: ProvenProof) -> ProvenRecord:
    return ProvenRecord(p.task_id, p.n_checkpoints, p.steps, p.settled_at)


def thaw_proven(key: bytes, r: ProvenRecord) -> ProvenProof:
    return ProvenProof(r.task_id, r.n_checkpoints, r.steps, r.settled_at)


def build_state(
    params: MarketParams,
    accounts: Accounts,
    meta: MetaRecord,
    workers: list[tuple[bytes, WorkerRecord]],
    tasks: list[tuple[bytes, TaskRecord]],
    proven: list[tuple[bytes, ProvenRecord]] = (),  # type: ignore[assignment]
    enc_keys: list[tuple[bytes, EncKeyRecord]] = (),  # type: ignore[assignment]
    links: list[tuple[bytes, LinksRecord]] = (),  # type: ignore[assignment]
) -> MarketState:
    """A `MarketState` over table entries; tasks and workers thaw when first touched."""
    state = MarketState(params=params, accounts=accounts, jackpot=meta.jackpot, burned=meta.burned)
    state.workers = LazyTable(dict(workers), thaw_worker)
    state.tasks = LazyTable(dict(tasks), thaw_task)
    state.proven = LazyTable(dict(proven), thaw_proven)
    state.enc_keys = LazyTable(dict(enc_keys), thaw_enc_key)
    state.links = LazyTable(dict(links), thaw_links)
    return state

