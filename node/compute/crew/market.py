"""The market's crew jobs done with torch: one engine for every shell that trains crews.

A crew task (docs/parallel.md) is trained by `stages x data_parallel` members together
and each member is then checked on its own stage. The market's roles ask their shell for
two jobs (protocol/market/jobs.py) and `CrewMarketCompute.run` answers both:

- `CrewTrainJob`: the member trains its stage with the rest of its crew (through a
  `CrewRunner`: `LocalCrewHub` on one box or in netsim), then publishes its proof as
  content-addressed blobs: for every segment j the full state at boundary j
  (`proof.open_states`) and the inputs it consumed in segment j, and a
  `CrewCommitRecord` that names them beside its boundary state digests and the hashes of
  every message it sent, received and all-reduced. The record's hash is the commitment
  the member puts on chain (`CrewCommit`).
- `CrewCheckJob`: a verifier fetches the member's record by its committed hash, and
  re-executes the member's sampled segments (`proof.verify_stage`) from the blobs the
  record names, with the sample drawn from the task's verify beacon and the member's
  stage (`protocol.market.crews.crew_sample_seed`), so every checker of a stage opens
  the same segments of every replica.

Everything that reaches the engine from outside (the spec, a peer's record, its blobs)
is size-capped before it is read, hash-checked after, and decoded with typed errors: a
bad spec becomes an aborted train result or a failed check with a finding, never an
exception out of `run`. The task file is protocol/pol/crew_spec.py's format, built into
a `CrewConfig` by node/compute/crew/config.py exactly as `polnet crew run` builds it,
and the crew trains on the built-in corpus, as that command does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, cast

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from node.compute import datasets
from node.compute.crew import cheats as catalog
from node.compute.crew.config import crew_config
from node.compute.crew.launch import CrewAborted, Progress, run_local_crew
from node.compute.crew.model import build_stage, canonical_state
from node.compute.crew.pipeline import CrewConfig, StageResult, windows
from node.compute.crew.proof import (
    MAX_PROOF_BLOB,
    Commitment,
    ProofError,
    member_profile,
    open_states,
    state_digest,
    verify_stage,
)
from node.compute.market_engine import Blobs, Lru, job_blobs
from protocol.encoding import sha256
from protocol.errors import BlobError, ConfigError, PolnetError, SpecError
from protocol.limits import Limits
from protocol.market.crews import crew_sample_seed, crew_tag
from protocol.market.jobs import (
    CrewCheckJob,
    CrewCheckResult,
    CrewTrainJob,
    CrewTrainResult,
    TaskFacts,
)
from protocol.pol.crew_spec import MAX_CREW_FILE, MAX_MEMBERS, CrewSettings, parse_crew_spec
from protocol.pol.sampling import DEFAULT_SAMPLE_FRACTION, choose_segments, sample_count
from protocol.records import decode_record, encode_record
from protocol.schema import U16, U32, Hash32, Len

log = logging.getLogger("polnet.compute.crew")

#: The longest run a commitment record can hold, in steps (so in all-reduce pairs and
#: boundaries too), and the most messages it records with one peer: a pipeline neighbour
#: exchanges `micro_batches` messages each way per step. A spec that asks for more is
#: refused before anyone trains, so no crew trains a run it cannot commit.
MAX_RECORD_STEPS = 1 << 16
MAX_PEER_MESSAGES = 1 << 20
#: The largest record a verifier reads (its hashes at most: 34 msgpack bytes each).
MAX_RECORD_BYTES = 256 * 1024 * 1024
#: Decoder limits of a peer's record: arrays as long as its longest list, byte strings
#: no longer than a hash, nothing else (the schema refuses maps and strings anyway).
RECORD_LIMITS = Limits(max_bytes=MAX_RECORD_BYTES, max_array_len=MAX_PEER_MESSAGES, max_bin_len=32,
                       max_str_len=0, max_map_len=0)
#: An abort's reason is for logs and reports: its first line, at most this long.
MAX_REASON = 240
#: Crew runs a `LocalCrewHub` keeps (results and proof folders) until every member asked.
KEEP_CREWS = 4


class RecordError(PolnetError):
    """A commitment record that cannot be fetched, decoded, or does not fit its job."""


# --- the commitment record ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerHashes:
    """The hashes of every message exchanged with one peer in one direction, in order."""

    peer: U16
    hashes: Annotated[tuple[Hash32, ...], Len(0, MAX_PEER_MESSAGES)]


@dataclass(frozen=True, slots=True)
class CrewCommitRecord:
    """What a crew member commits to (its hash goes on chain): `proof.Commitment`'s
    fields, and per segment j the hashes of the blobs that open it, the full state at
    boundary j and the inputs of segment j. Peers are listed in rank order, once each,
    so one commitment has one encoding; `task_id` ties it to one task."""

    task_id: Hash32
    rank: U16
    state_digests: Annotated[tuple[Hash32, ...], Len(2, MAX_RECORD_STEPS + 1)]
    sent: Annotated[tuple[PeerHashes, ...], Len(0, MAX_MEMBERS - 1)]
    received: Annotated[tuple[PeerHashes, ...], Len(0, MAX_MEMBERS - 1)]
    reduced: Annotated[tuple[tuple[Hash32, Hash32], ...], Len(0, MAX_RECORD_STEPS)]
    segments: Annotated[tuple[tuple[Hash32, Hash32], ...], Len(1, MAX_RECORD_STEPS)]
    steps: U32
    #: The full state blob at the last boundary (its digest is the last of
    #: `state_digests`, which the check of the last segment re-executes): where the
    #: trained stage's weights are read from for the task's result.
    final: Hash32


def _peer_hashes(by_peer: Mapping[int, list[bytes]]) -> tuple[PeerHashes, ...]:
    return tuple(PeerHashes(peer, tuple(hashes)) for peer, hashes in sorted(by_peer.items()))


def _by_peer(entries: tuple[PeerHashes, ...], cfg: CrewConfig, rank: int) -> dict[int, list[bytes]]:
    peers = [e.peer for e in entries]
    if peers != sorted(set(peers)) or any(p >= cfg.world or p == rank for p in peers):
        raise RecordError("the record's peers are not distinct other members in rank order")
    return {e.peer: list(e.hashes) for e in entries}


def record_of(task_id: bytes, cfg: CrewConfig, result: StageResult,
              segments: list[tuple[bytes, bytes]], final: bytes) -> CrewCommitRecord:
    return CrewCommitRecord(task_id, result.rank, tuple(result.state_digests), _peer_hashes(result.sent),
                            _peer_hashes(result.received), tuple(result.reduced), tuple(segments),
                            cfg.total_steps, final)


def commitment_of(record: CrewCommitRecord, cfg: CrewConfig) -> Commitment:
    """The record as `proof.verify_stage` reads it; RecordError if it cannot be this
    crew's (the counts the verifier indexes by must fit the run, or it would index past
    them)."""
    bounds = cfg.boundaries()
    if record.steps != cfg.total_steps or len(record.state_digests) != len(bounds):
        raise RecordError(f"the record commits {len(record.state_digests)} boundaries of {record.steps} "
                          f"steps, the task has {len(bounds)} of {cfg.total_steps}")
    if len(record.segments) != len(bounds) - 1:
        raise RecordError(f"the record opens {len(record.segments)} segments of {len(bounds) - 1}")
    return Commitment(record.rank, list(record.state_digests), _by_peer(record.sent, cfg, record.rank),
                      _by_peer(record.received, cfg, record.rank), list(record.reduced))


# --- who trains: the runner ------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRun:
    """One member's trained stage: its result, and the folder of its proof
    (proof.ProofDir's layout: `state-J` for every boundary, `inputs-J` for every segment)."""

    result: StageResult
    proof_dir: Path


class CrewRunner(Protocol):
    """Trains one member of a crew together with the rest of it. Returns this member's
    run, or None when this member is itself the one that dropped out (its shell then
    says nothing); raises `CrewAborted` (with the steps this member did) when the crew
    stopped before the end because of another member or the deadline."""

    def train(self, task_id: bytes, cfg: CrewConfig, tokens: torch.Tensor, rank: int,
              members: tuple[bytes, ...], attempt: int = 0) -> MemberRun | None: ...


@dataclass
class _CrewRun:
    members: tuple[bytes, ...]
    cfg: CrewConfig
    root: Path
    results: list[StageResult] | None
    reason: str
    progress: dict[int, int]
    vanished: int | None


class LocalCrewHub:
    """`CrewRunner` for a crew whose members all live on this box (tests, netsim, a
    single-box swarm). The first member to ask runs the whole crew once
    (`launch.run_local_crew`, one process per member, proofs under
    `work_dir/<task id hex>/<crew tag>/rank-R`); every other member's ask is answered from
    that run. A run is kept by task and members, so a crew the market re-placed after an
    abort trains afresh, in a folder of its own, while a late ask of the old crew cannot
    clobber it.
    `cheats` (member key -> node/compute/crew/cheats.py name) and `vanish` (member key ->
    the step after which it dies, like kill -9) are fault injection by member key, so a
    scenario names the cheater before the market has placed it. When the crew aborts,
    the vanished member gets None (silence) and every other member `CrewAborted` with
    the steps it had done. The last KEEP_CREWS runs are kept; an older one's proofs are
    removed (its members have published them as blobs by then)."""

    def __init__(self, work_dir: Path, cheats: Mapping[bytes, str] | None = None,
                 vanish: Mapping[bytes, int] | None = None, deadline_s: float = 600.0,
                 keep: int = KEEP_CREWS) -> None:
        unknown = sorted(set((cheats or {}).values()) - set(catalog.CATALOG))
        if unknown:  # a typo fails here, not as a crashed member in the middle of a run
            raise ConfigError(f"unknown crew cheat(s) {', '.join(unknown)}; "
                              f"known: {', '.join(catalog.CATALOG)}")
        self.work_dir = work_dir
        self.cheats = dict(cheats or {})
        self.vanish = dict(vanish or {})
        self.deadline_s = deadline_s
        self.keep = keep
        self._runs: OrderedDict[tuple[bytes, tuple[bytes, ...], int], _CrewRun] = OrderedDict()
        self._lock = threading.Lock()  # one crew at a time; a second asker waits for its run

    def train(self, task_id: bytes, cfg: CrewConfig, tokens: torch.Tensor, rank: int,
              members: tuple[bytes, ...], attempt: int = 0) -> MemberRun | None:
        key = (task_id, members, attempt)
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.cfg != cfg:
                run = self._run(task_id, cfg, tokens, members, attempt)
            self._runs.move_to_end(key)
        if run.results is None:
            if rank == run.vanished:
                return None
            raise CrewAborted(run.reason, run.progress.get(rank, 0))
        return MemberRun(run.results[rank], run.root / f"rank-{rank}")

    def _run(self, task_id: bytes, cfg: CrewConfig, tokens: torch.Tensor,
             members: tuple[bytes, ...], attempt: int) -> _CrewRun:
        root = self.work_dir / task_id.hex() / crew_tag(task_id, members, attempt)[:8].hex()
        shutil.rmtree(root, ignore_errors=True)  # a stale run's proofs must not mix with this one's
        cheats = {r: self.cheats[m] for r, m in enumerate(members) if m in self.cheats}
        dying = [(r, self.vanish[m]) for r, m in enumerate(members) if m in self.vanish]
        vanish = dying[0] if dying else None  # the launcher kills one member; the first by rank
        progress: dict[int, int] = {}

        def on_progress(p: Progress) -> None:
            progress[p.rank] = max(progress.get(p.rank, 0), p.step)

        results: list[StageResult] | None = None
        reason = ""
        try:
            results = run_local_crew(cfg, tokens, deadline_s=self.deadline_s, vanish=vanish, cheats=cheats,
                                     proof_root=root, on_progress=on_progress)
        except CrewAborted as exc:
            reason = str(exc)
            log.warning("crew aborted", extra={"task": task_id.hex()[:16], "reason": _short(reason)})
        run = _CrewRun(members, cfg, root, results, reason, progress, vanish[0] if vanish else None)
        self._runs[(task_id, members, attempt)] = run
        while len(self._runs) > self.keep:
            _, old = self._runs.popitem(last=False)
            shutil.rmtree(old.root, ignore_errors=True)
            with contextlib.suppress(OSError):  # the task's folder, once no crew of it is left
                old.root.parent.rmdir()
        return run


# --- the engine ---------------------------------------------------------------------------------


@functools.cache
def builtin_tokens() -> torch.Tensor:
    """The built-in corpus every crew trains on (as `polnet crew run` does), read once."""
    return datasets.corpus().tokens


def _short(reason: str) -> str:
    """One line of a reason for logs and results: its first line (which member failed)
    and, of a member's traceback, its last (the error itself)."""
    lines = [x.strip() for x in reason.splitlines() if x.strip()]
    line = " ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines)
    return line[:MAX_REASON]


class CrewMarketCompute:
    """One node's crew compute: `run(task, job)` answers a `CrewTrainJob` or a
    `CrewCheckJob` of the crew task `task` (its facts frozen when the role asked). `me`
    is this node's key, the seat a train job must give it; `fraction` is the share of
    segments a check re-executes (at least two, the last always)."""

    def __init__(self, me: bytes, blobs: Blobs, runner: CrewRunner,
                 fraction: float = DEFAULT_SAMPLE_FRACTION,
                 torch_guard: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
        self.me = me
        self.store = blobs  # the shell's blobs; `blobs` is what the current job sees
        self.blobs = blobs
        self.runner = runner
        self.fraction = fraction
        #: Held while a train job uses torch in this process (reading the spec, publishing
        #: the proof), not while the member process trains: a daemon's job lock.
        self.torch_guard = torch_guard
        self._settings: Lru = Lru()

    def run(self, task: TaskFacts,
            job: CrewTrainJob | CrewCheckJob) -> CrewTrainResult | CrewCheckResult | None:
        with self._blobs_of(task):
            if isinstance(job, CrewTrainJob):
                return self._train(task, job)
            if isinstance(job, CrewCheckJob):
                return self._check(task, job)
        raise PolnetError(f"not a crew compute job: {type(job).__name__}")

    def _blobs_of(self, task: TaskFacts) -> AbstractContextManager[None]:
        """A private task's proof blobs and record are sealed under its content key, as
        TorchMarketCompute seals a solver's (its spec is public)."""
        return job_blobs(self, task)

    # --- inputs ---------------------------------------------------------------------------

    def _get(self, blobs: Blobs, digest: bytes, cap: int) -> bytes:
        """A blob by its hash, at most `cap` bytes, checked against the hash (whatever
        store or peer served it)."""
        data = blobs.get(digest, cap)
        if len(data) > cap:
            raise BlobError(f"blob {digest.hex()[:16]} is over its {cap}-byte cap")
        if sha256(data) != digest:
            raise BlobError(f"blob {digest.hex()[:16]} does not hash to its name")
        return data

    def settings(self, spec_hash: bytes) -> CrewSettings:
        """The task file named by `spec_hash` (public, fetched and parsed once); SpecError
        when it cannot be fetched or is not a crew task file."""
        if spec_hash not in self._settings:
            try:
                blob = self._get(self.store, spec_hash, MAX_CREW_FILE)
                settings = parse_crew_spec(blob, f"crew spec {spec_hash.hex()[:16]}")
            except PolnetError as exc:
                raise SpecError(f"spec: {exc}") from None
            self._settings.put(spec_hash, settings)
        return cast(CrewSettings, self._settings[spec_hash])

    def config(self, task: TaskFacts, job: CrewTrainJob | CrewCheckJob) -> CrewConfig:
        """The crew's config from the task's spec, if the spec is the job's and fits it
        and the task (its crew shape, its steps and checkpoint interval, the record's
        bounds, the corpus); SpecError saying what does not."""
        if job.spec_hash != task.spec_hash:
            raise SpecError("spec: the job names another spec than its task")
        settings = self.settings(job.spec_hash)
        shape = (settings.crew["stages"], settings.crew["data_parallel"])
        if shape != (job.stages, job.data_parallel):
            raise SpecError(f"spec: a crew of {shape[0]} x {shape[1]}, the job's is "
                            f"{job.stages} x {job.data_parallel}")
        try:
            cfg = crew_config(settings)
            windows(builtin_tokens(), cfg)  # the corpus holds the windows the spec asks for
        except (ConfigError, ValueError) as exc:
            raise SpecError(f"spec: {exc}") from None
        if cfg.total_steps != task.steps or cfg.segment_steps != task.checkpoint_interval:
            raise SpecError(f"spec: {cfg.total_steps} steps in segments of {cfg.segment_steps}, the task "
                            f"commits {task.steps} in segments of {task.checkpoint_interval}")
        if cfg.total_steps > MAX_RECORD_STEPS or cfg.total_steps * cfg.micro_batches > MAX_PEER_MESSAGES:
            raise SpecError(f"spec: a run of {cfg.total_steps} steps of {cfg.micro_batches} micro-batches is "
                            "longer than a commitment record holds")
        if len(job.members) != cfg.world or not 0 <= job.rank < cfg.world:
            raise SpecError(f"job: rank {job.rank} of {len(job.members)} members in a crew of {cfg.world}")
        return cfg

    # --- train ----------------------------------------------------------------------------

    def _train(self, task: TaskFacts, job: CrewTrainJob) -> CrewTrainResult | None:
        def aborted(reason: str, step: int = 0) -> CrewTrainResult:
            return CrewTrainResult(task.task_id, job.rank, b"", 0, aborted=_short(reason) or "crew aborted",
                                   step=step)

        if not 0 <= job.rank < len(job.members) or job.members[job.rank] != self.me:
            log.warning("crew train job for another seat", extra={"task": task.task_id.hex()[:16]})
            return None
        try:
            with self.torch_guard():
                cfg = self.config(task, job)
        except SpecError as exc:
            return aborted(str(exc))
        try:
            run = self.runner.train(task.task_id, cfg, builtin_tokens(), job.rank, job.members, job.attempt)
        except CrewAborted as exc:
            return aborted(exc.reason, exc.step)
        if run is None:
            return None  # this member dropped out: it says nothing
        try:
            with self.torch_guard():
                commitment, n = self.publish(task.task_id, cfg, run)
        except (PolnetError, ProofError, OSError) as exc:
            log.warning("crew proof not published", extra={"task": task.task_id.hex()[:16],
                                                            "error": str(exc)})
            return aborted(f"proof: {exc}", cfg.total_steps)
        return CrewTrainResult(task.task_id, job.rank, commitment, n)

    def publish(self, task_id: bytes, cfg: CrewConfig, run: MemberRun) -> tuple[bytes, int]:
        """Store what a verifier opens (every segment's start state and inputs) and the
        record naming it; (the record's hash, its boundaries). The blob store must be
        content-addressed (the record's hash is what the market commits and a verifier
        fetches by), so what `put` returns is checked against sha256."""
        result = run.result
        if result.rank < 0 or len(result.state_digests) != len(cfg.boundaries()):
            raise RecordError(f"member {result.rank} committed {len(result.state_digests)} boundaries, "
                              f"the run has {len(cfg.boundaries())}")
        segments = []
        states = open_states(run.proof_dir, len(result.state_digests))
        for j in range(len(result.state_digests) - 1):
            inputs = _read_capped(run.proof_dir / f"inputs-{j}")
            segments.append((self._put(next(states)), self._put(inputs)))
        final = self._put(next(states))
        record = record_of(task_id, cfg, result, segments, final)
        return self._put(encode_record(record)), len(record.state_digests)

    def _put(self, data: bytes) -> bytes:
        digest = self.blobs.put(data)
        if digest != sha256(data):
            raise BlobError("the blob store named a blob by something other than its sha256")
        return digest

    # --- check ----------------------------------------------------------------------------

    def record(self, job: CrewCheckJob, cfg: CrewConfig) -> CrewCommitRecord:
        """Member `job.rank`'s committed record, fetched by hash and decoded under
        RECORD_LIMITS; RecordError when it cannot be had or is not this member's."""
        if len(job.commitments) != cfg.world:
            raise RecordError(f"{len(job.commitments)} commitments for a crew of {cfg.world}")
        digest = job.commitments[job.rank]
        try:
            record = decode_record(CrewCommitRecord, self._get(self.blobs, digest, MAX_RECORD_BYTES),
                                   RECORD_LIMITS)
        except PolnetError as exc:
            raise RecordError(f"record {digest.hex()[:16]}: {exc}") from None
        if record.rank != job.rank or record.task_id != job.task_id:
            raise RecordError(f"record {digest.hex()[:16]} is member {record.rank}'s of task "
                              f"{record.task_id.hex()[:16]}, not member {job.rank}'s of this one")
        return record

    # --- the result ---------------------------------------------------------------------------

    def final_weights(self, task: TaskFacts, members: tuple[bytes, ...], commitments: tuple[bytes, ...],
                      stages: int, data_parallel: int) -> tuple[bytes, float]:
        """A settled crew task's model as one safetensors blob under the whole model's names
        (stored here, so the node serves it), and its next-byte accuracy on the crew's
        held-out windows. Each stage's weights come from replica 0's committed final state,
        checked against the last digest its record commits (the state the check of its
        last segment re-executed to); PolnetError when a piece cannot be had or fails."""
        job = CrewCheckJob(task.task_id, task.spec_hash, 0, members, stages, data_parallel, commitments, b"")
        with self._blobs_of(task):
            cfg = self.config(task, job)
            whole: dict[str, torch.Tensor] = {}
            for stage in range(cfg.stages):
                rank = cfg.rank(stage, 0)
                record = self.record(dataclasses.replace(job, rank=rank), cfg)
                state = load_tensors(self._get(self.blobs, record.final, MAX_PROOF_BLOB))
                if state_digest(state) != record.state_digests[-1]:
                    raise RecordError(f"member {rank}'s final state is not the one its record commits")
                whole.update(stage_weights(cfg, stage, state))
            return self._put(save_tensors(whole)), held_out_accuracy(cfg, whole)

    def _check(self, task: TaskFacts, job: CrewCheckJob) -> CrewCheckResult:
        try:
            cfg = self.config(task, job)
        except SpecError as exc:
            return CrewCheckResult(task.task_id, job.rank, False, finding=_short(str(exc)))
        try:
            record = self.record(job, cfg)
            commitment = commitment_of(record, cfg)
        except RecordError as exc:
            return CrewCheckResult(task.task_id, job.rank, False, available=False,
                                   finding=_short(f"record: {exc}"))
        stage = cfg.position(job.rank)[0]
        seed = crew_sample_seed(job.beacon, job.task_id, stage)
        n = len(record.segments)
        chosen = choose_segments(seed, n, sample_count(n, self.fraction))  # verify_stage's own draw
        self.blobs.prefetch([(h, MAX_PROOF_BLOB) for j in chosen for h in record.segments[j]])
        unserved: list[int] = []

        def fetch(rank: int, segment: int) -> tuple[bytes, bytes]:
            state_hash, inputs_hash = record.segments[segment]
            try:
                return (self._get(self.blobs, state_hash, MAX_PROOF_BLOB),
                        self._get(self.blobs, inputs_hash, MAX_PROOF_BLOB))
            except PolnetError as exc:
                unserved.append(segment)
                raise ProofError(f"segment {segment}: {exc}") from None

        try:
            with member_profile():  # the member's thread count and kernels, so hashes match bit for bit
                verdict = verify_stage(cfg, stage, builtin_tokens(), [commitment], fetch, seed, self.fraction)
        except (ProofError, ValueError, RuntimeError, KeyError, IndexError) as exc:
            # what a hostile record or blob might still break in the worker code: its fault
            log.warning("crew re-execution failed", extra={"task": task.task_id.hex()[:16],
                                                            "error": str(exc)})
            return CrewCheckResult(task.task_id, job.rank, False,
                                   finding=_short(f"re-execution failed: {exc}"))
        first = verdict.findings[0] if verdict.findings else None
        finding = f"{first.what} (segment {first.segment}, at {first.index})" if first is not None else ""
        return CrewCheckResult(task.task_id, job.rank, verdict.passed, available=not unserved,
                               finding=_short(finding), steps_executed=verdict.steps_executed)


def stage_weights(cfg: CrewConfig, stage: int, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A stage's trained weights under the whole model's names, from a member's full state."""
    module = build_stage(cfg.shape, cfg.stages, stage, cfg.seed)
    params = {k.removeprefix("param/"): v for k, v in state.items() if k.startswith("param/")}
    try:
        module.load_state_dict(params)
    except RuntimeError as exc:  # missing, extra or misshapen weights: not this stage's
        raise RecordError(f"stage {stage}'s final state does not fit its model: {exc}") from None
    return canonical_state(module, cfg.shape, cfg.stages, stage)


@torch.no_grad()
def held_out_accuracy(cfg: CrewConfig, whole: dict[str, torch.Tensor]) -> float:
    """Share of the held-out windows' next bytes the whole model predicts (top 1)."""
    with member_profile():
        model = build_stage(cfg.shape, 1, 0, cfg.seed, base=whole)
        _, val = windows(builtin_tokens(), cfg)
        right = total = 0
        for start in range(0, val.shape[0], cfg.micro_batch):
            rows = val[start : start + cfg.micro_batch]
            guess = model(rows[:, :-1]).argmax(dim=-1)
            right += int((guess == rows[:, 1:]).sum())
            total += rows[:, 1:].numel()
    return right / max(1, total)


def _read_capped(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_PROOF_BLOB:
        raise ProofError(f"{path.name} is {size} bytes, over the {MAX_PROOF_BLOB}-byte cap")
    return path.read_bytes()
