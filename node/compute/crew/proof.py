"""A crew member's proof of its own stage, and re-executing one segment of it.

What a member commits (docs/parallel.md, "Verification stage by stage"):

- its state at every boundary of `CrewConfig.boundaries` (every `segment_steps` steps):
  the stage's weights, its optimizer's moments, and both AQ-SGD caches it holds (the
  input side's and the output side's), as one digest per boundary (`state_digest`);
- its transcript: the hash of every boundary message it sent and received, in order, and
  of each all-reduce contribution and result (pipeline.Transcript).

What it keeps, so it can open any segment when asked: the state blob of every boundary
and, per segment, the inputs it consumed in it (every raw message received, every
all-reduce sum applied). The segment's inputs are pinned twice: by the member's own
received hashes, and by its neighbours' sent hashes (crosscheck.py compares the two).

A verifier re-executes segment j of member r from the opened start state and inputs,
with the same worker code, and compares what comes out with what r committed: every
message r sent in the segment, every contribution to the all-reduce, and the state at the
segment's end. CPU training with one thread and deterministic algorithms is bit-exact, so
the comparison is equality of hashes: any difference is a finding. Segments are sampled
with the single-node rule (protocol/pol/sampling.py): the last segment always, since
every shortcut that saves work shows there, plus a seeded few drawn after the commitment.
With data parallelism, a member's inputs include its replicas' signed gradient
contributions (pipeline.StageWorker._all_reduce), so its re-execution reproduces the
all-reduce exactly too.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save

from node.compute.crew.crosscheck import first_difference
from node.compute.crew.pipeline import CrewConfig, StageResult, StageWorker, schedule, windows
from protocol.pol.sampling import DEFAULT_SAMPLE_FRACTION, choose_segments, sample_count

#: The largest state or inputs blob a verifier reads (a blob is checked against its
#: commitment only after it is read, so its size is bounded first).
MAX_PROOF_BLOB = 1 << 30
_OPT_KEYS = ("exp_avg", "exp_avg_sq", "step")


class ProofError(ValueError):
    """A proof blob that is too large, malformed, or does not fit the crew's model."""


# --- a member's state at a boundary ---------------------------------------------------------------


def snapshot(worker: StageWorker) -> dict[str, torch.Tensor]:
    """Everything the member's next steps depend on, by name."""
    out = {f"param/{k}": v.detach().clone() for k, v in worker.module.state_dict().items()}
    for i, st in worker.opt.state_dict()["state"].items():
        for key in _OPT_KEYS:
            out[f"opt/{i}/{key}"] = st[key].detach().clone()
    for side, codec in (("send", worker.sender), ("recv", worker.receiver)):
        if codec is not None:
            out[f"{side}/m"] = codec.cache.m.clone()
            out[f"{side}/seen"] = codec.cache.seen.to(torch.uint8)
    out["meta/step"] = torch.tensor([worker.steps_done], dtype=torch.int64)
    return out


def state_digest(tensors: dict[str, torch.Tensor]) -> bytes:
    """One hash of a state: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256(b"polnet/crew/state/v1\x00")
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def restore(worker: StageWorker, tensors: dict[str, torch.Tensor]) -> None:
    """Put a (checked) snapshot into a fresh worker; ProofError if it does not fit."""
    fresh = snapshot(worker)
    fixed = {k: v for k, v in fresh.items() if not k.startswith("opt/")}
    for name, ref in fixed.items():
        got = tensors.get(name)
        if got is None or got.dtype != ref.dtype or got.shape != ref.shape:
            raise ProofError(f"state entry {name!r} is missing or not {ref.dtype} {tuple(ref.shape)}")
    params = list(worker.module.parameters())
    opt = {k for k in tensors if k.startswith("opt/")}
    want = {f"opt/{i}/{key}" for i in range(len(params)) for key in _OPT_KEYS}
    if opt not in (set(), want) or set(tensors) - set(fixed) - opt:
        raise ProofError("state has unexpected or partial entries")
    for i, p in enumerate(params):
        if opt and any(tensors[f"opt/{i}/{key}"].shape != p.shape for key in _OPT_KEYS[:2]):
            raise ProofError(f"optimizer moments of parameter {i} do not fit it")
    worker.module.load_state_dict({k.removeprefix("param/"): v for k, v in tensors.items()
                                   if k.startswith("param/")})
    if opt:
        sd = worker.opt.state_dict()
        sd["state"] = {i: {key: tensors[f"opt/{i}/{key}"].clone() for key in _OPT_KEYS}
                       for i in range(len(params))}
        worker.opt.load_state_dict(sd)
    for side, codec in (("send", worker.sender), ("recv", worker.receiver)):
        if codec is not None:
            codec.cache.m.copy_(tensors[f"{side}/m"])
            codec.cache.seen.copy_(tensors[f"{side}/seen"].bool())
    worker.steps_done = int(tensors["meta/step"][0])


# --- what a member keeps: state blobs and segment inputs ------------------------------------------


@dataclass
class SegmentInputs:
    """What a member consumed in one segment: raw messages by source, in order (its
    neighbours' activations and gradients, its replicas' all-reduce contributions)."""

    messages: dict[int, list[bytes]] = field(default_factory=dict)

    def to_blob(self) -> bytes:
        out: dict[str, torch.Tensor] = {}
        for src, msgs in self.messages.items():
            raw = bytearray(b"".join(msgs)) or bytearray(1)  # safetensors wants a non-empty buffer
            out[f"recv/{src}/data"] = torch.frombuffer(raw, dtype=torch.uint8)
            out[f"recv/{src}/len"] = torch.tensor([len(m) for m in msgs], dtype=torch.int64)
        return save(out)

    @classmethod
    def from_blob(cls, blob: bytes) -> SegmentInputs:
        tensors = load_blob(blob)
        inputs = cls()
        for name in tensors:
            parts = name.split("/")
            if parts[0] == "recv" and len(parts) == 3 and parts[1].isdigit() and parts[2] == "len":
                data = tensors.get(f"recv/{parts[1]}/data")
                lens = tensors[name]
                if data is None or data.dtype != torch.uint8 or lens.dtype != torch.int64 or lens.dim() != 1:
                    raise ProofError(f"inputs entry {name!r} is malformed")
                raw = data.numpy().tobytes()
                if bool((lens < 0).any()) or int(lens.sum()) > len(raw):
                    raise ProofError(f"inputs entry {name!r} overruns its data")
                offsets = [0, *torch.cumsum(lens, 0).tolist()]
                inputs.messages[int(parts[1])] = [raw[a:b] for a, b in itertools.pairwise(offsets)]
        return inputs


def load_blob(blob: bytes) -> dict[str, torch.Tensor]:
    if len(blob) > MAX_PROOF_BLOB:
        raise ProofError(f"proof blob of {len(blob)} bytes is over the {MAX_PROOF_BLOB}-byte cap")
    try:
        return load(blob)  # safetensors: no pickle
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ProofError(f"proof blob is not safetensors: {exc}") from exc


_CACHE_SIDES = ("send", "recv")


class ProofDir:
    """A member's proof material on disk (the pipeline's ProofSink): `state-J` for every
    boundary J, `inputs-J` for every segment J, and the committed digests in memory.

    A boundary's full state holds both AQ-SGD caches, one activation per training sample,
    which dwarf the weights and change only in the rows of the samples the segment
    visited. So `state-J` keeps the weights, moments and step in full but, of each cache,
    only the rows of segment J-1's samples (from the schedule); `open_state` replays the
    rows of boundaries 0..J onto empty caches to serve the full state, whose digest the
    verifier checks against the commitment. What a member stores then grows with the
    steps it trained, not with boundaries x samples."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._digests: list[bytes] = []
        self._inputs = SegmentInputs()
        self._last_step = 0
        self._steps: Iterator[list[list[torch.Tensor]]] | None = None  # the schedule, consumed once

    @property
    def digests(self) -> list[bytes]:
        return self._digests

    def on_recv(self, src: int, data: bytes) -> None:
        self._inputs.messages.setdefault(src, []).append(data)

    def checkpoint(self, worker: StageWorker, index: int) -> None:
        state = snapshot(worker)
        self._digests.append(state_digest(state))
        if self._steps is None:
            self._steps = schedule(worker.cfg)
        # the steps since the last boundary: the only cache rows they can have changed
        visited = [m for step in itertools.islice(self._steps, worker.steps_done - self._last_step)
                   for m in step[worker.replica]]
        rows = torch.cat(visited) if visited else torch.zeros(0, dtype=torch.int64)
        self._last_step = worker.steps_done
        (self.root / f"state-{index}").write_bytes(save(_cache_rows(state, rows)))
        if index > 0:
            (self.root / f"inputs-{index - 1}").write_bytes(self._inputs.to_blob())
            self._inputs = SegmentInputs()


def _cache_rows(state: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """A snapshot with each cache cut down to `rows` (and its length kept)."""
    out = {k: v for k, v in state.items() if k.split("/")[0] not in _CACHE_SIDES}
    for side in _CACHE_SIDES:
        if f"{side}/m" in state:
            out[f"{side}/n"] = torch.tensor([state[f"{side}/m"].shape[0]], dtype=torch.int64)
            out[f"{side}/rows"] = rows.clone()
            out[f"{side}/m_rows"] = state[f"{side}/m"][rows].clone()
            out[f"{side}/seen_rows"] = state[f"{side}/seen"][rows].clone()
    return out


def stored_bytes(member: Path) -> int:
    """What a member's proof takes on disk."""
    return sum(f.stat().st_size for f in member.iterdir())


def _rows_of(path: Path, side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One stored boundary's rows of one cache, read alone (safetensors maps the file and
    reads only these tensors, not the weights beside them)."""
    if path.stat().st_size > MAX_PROOF_BLOB:
        raise ProofError(f"{path.name} is over the {MAX_PROOF_BLOB}-byte cap")
    try:
        with safe_open(str(path), framework="pt") as f:
            idx, vals, flags = (f.get_tensor(f"{side}/{k}") for k in ("rows", "m_rows", "seen_rows"))
            return idx, vals, flags
    except (SafetensorError, KeyError, ValueError, RuntimeError) as exc:
        raise ProofError(f"{path.name} lacks readable {side} cache rows: {exc}") from exc


def open_state(member: Path, boundary: int) -> bytes:
    """The full state blob of a member's `boundary`, rebuilt from its stored files (what
    it serves a verifier): the weights of `state-J`, each cache replayed from the rows of
    boundaries 0..J. ProofError if a file is missing, oversized or malformed."""
    caches: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for j in range(boundary):
        _replay(member, j, caches)
    return _replay(member, boundary, caches)


def open_states(member: Path, count: int) -> Iterator[bytes]:
    """`open_state(member, j)` for j = 0..count-1, in one pass: each boundary's rows are
    read once, where opening each state alone reads rows 0..j again (publishing a long
    run's every segment took time quadratic in its segments)."""
    caches: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for j in range(count):
        yield _replay(member, j, caches)


def _replay(member: Path, j: int, caches: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> bytes:
    """Boundary j's state blob, with `caches` (each side's cache after boundaries 0..j-1)
    brought up to boundary j."""
    try:
        last = load_blob(_read_capped(member / f"state-{j}"))
        state = {k: v for k, v in last.items() if k.split("/")[0] not in _CACHE_SIDES}
        for side in _CACHE_SIDES:
            if f"{side}/n" not in last:
                continue
            n = int(last[f"{side}/n"][0])
            shape = last[f"{side}/m_rows"].shape[1:]
            if not 0 <= n * max(1, math.prod(shape)) <= MAX_PROOF_BLOB // 4:
                raise ProofError(f"a {side} cache of {n} samples of {tuple(shape)}")
            if side not in caches:
                if j > 0:  # every boundary of a stage stores the same caches
                    raise ProofError(f"state {j} has a {side} cache that earlier boundaries lack")
                caches[side] = (torch.zeros(n, *shape, dtype=torch.float32),
                                torch.zeros(n, dtype=torch.uint8))
            m, seen = caches[side]
            if m.shape != (n, *shape):
                raise ProofError(f"the {side} cache changes shape at state {j}")
            idx, vals, flags = _rows_of(member / f"state-{j}", side)
            ok = (idx.dtype == torch.int64 and idx.dim() == 1 and vals.shape[1:] == shape
                  and vals.shape[0] == flags.shape[0] == idx.shape[0] and vals.dtype == torch.float32
                  and flags.dtype == torch.uint8 and bool(((idx >= 0) & (idx < n)).all()))
            if not ok:
                raise ProofError(f"stored {side} cache rows do not fit the cache")
            m[idx], seen[idx] = vals, flags
            state[f"{side}/m"], state[f"{side}/seen"] = m, seen
    except OSError as exc:
        raise ProofError(f"state {j} cannot be opened: {exc}") from exc
    except KeyError as exc:
        raise ProofError(f"state {j} lacks {exc}") from exc
    return save(state)


# --- re-execution ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commitment:
    """What one member committed: boundary state digests and its transcript hashes."""

    rank: int
    state_digests: list[bytes]
    sent: dict[int, list[bytes]]
    received: dict[int, list[bytes]]
    reduced: list[tuple[bytes, bytes]]

    @classmethod
    def of(cls, result: StageResult) -> Commitment:
        return cls(result.rank, result.state_digests, result.sent, result.received, result.reduced)


@dataclass(frozen=True)
class Finding:
    """Member `rank` does not stand behind its commitment in segment `segment`: `what`
    names the first thing that differs, `index` the message or step (global)."""

    rank: int
    segment: int
    what: str
    index: int


class ReplayChannel:
    """Serves the recorded messages in order and hashes what the re-execution sends."""

    def __init__(self, messages: dict[int, list[bytes]]) -> None:
        self.messages = {src: list(reversed(m)) for src, m in messages.items()}
        self.sent: dict[int, list[bytes]] = {}

    def send(self, dst: int, data: bytes) -> None:
        self.sent.setdefault(dst, []).append(hashlib.sha256(data).digest())

    def recv(self, src: int) -> bytes:
        queue = self.messages.get(src)
        if not queue:
            raise ProofError(f"the re-execution needs a message from member {src} the inputs lack")
        return queue.pop()


@dataclass
class Replay:
    sent: dict[int, list[bytes]]
    reduced: list[tuple[bytes, bytes]]
    end_digest: bytes


@contextmanager
def fresh_worker(cfg: CrewConfig, rank: int, train: torch.Tensor,
                 channel: ReplayChannel) -> Iterator[StageWorker]:
    """An untrained worker for `rank` (its big caches in a scratch folder, removed after)."""
    with tempfile.TemporaryDirectory(prefix="polnet-crew-replay-") as spill:
        worker = StageWorker(cfg, rank, channel, train, spill_dir=Path(spill))
        try:
            yield worker
        finally:
            worker.close()


def initial_digest(cfg: CrewConfig, rank: int, train: torch.Tensor) -> bytes:
    """The digest boundary 0 must carry: the seeded (or base) model, no optimizer state,
    empty caches."""
    with fresh_worker(cfg, rank, train, ReplayChannel({})) as worker:
        return state_digest(snapshot(worker))


@contextmanager
def member_profile() -> Iterator[None]:
    """Run as a crew member does (launch.py): one torch thread, deterministic algorithms.
    Another thread count changes the low bits of the backward pass, and then every hash."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def replay_segment(cfg: CrewConfig, rank: int, train: torch.Tensor, bounds: list[int], segment: int,
                   start: dict[str, torch.Tensor], inputs: SegmentInputs) -> Replay:
    """Re-execute `segment` of member `rank` from its start state and recorded inputs,
    with the member's own worker code, under `member_profile`."""
    channel = ReplayChannel(inputs.messages)
    with member_profile(), fresh_worker(cfg, rank, train, channel) as worker:
        restore(worker, start)
        a, b = bounds[segment], bounds[segment + 1]
        if worker.steps_done != a:
            raise ProofError(f"state opens at step {worker.steps_done}, segment {segment} starts at {a}")
        for micro in itertools.islice(schedule(cfg), a, b):
            worker.step(micro[worker.replica])
        return Replay(channel.sent, worker.transcript.reduced, state_digest(snapshot(worker)))


def message_range(cfg: CrewConfig, rank: int, peer: int, first: int, end: int) -> tuple[int, int]:
    """Indices of the messages between `rank` and `peer` (either way) in steps
    [first, end): micro_batches per step with a pipeline neighbour, one with a replica."""
    per = 1 if cfg.position(peer)[0] == cfg.position(rank)[0] else cfg.micro_batches
    return first * per, end * per


def check_segment(cfg: CrewConfig, train: torch.Tensor, bounds: list[int], c: Commitment, segment: int,
                  state_blob: bytes, inputs_blob: bytes) -> Finding | None:
    """Open member c.rank's segment and re-execute it: the first thing that does not
    match its commitment, or None."""
    a, b = bounds[segment], bounds[segment + 1]
    try:
        start = load_blob(state_blob)
        inputs = SegmentInputs.from_blob(inputs_blob)
    except ProofError:
        return Finding(c.rank, segment, "unreadable proof blob", a)
    if state_digest(start) != c.state_digests[segment]:
        return Finding(c.rank, segment, "start state", a)
    for src, msgs in inputs.messages.items():  # the inputs must be what it committed to receiving
        lo, hi = message_range(cfg, c.rank, src, a, b)
        if [hashlib.sha256(m).digest() for m in msgs] != c.received.get(src, [])[lo:hi]:
            return Finding(c.rank, segment, f"messages from {src}", lo)
    try:
        rep = replay_segment(cfg, c.rank, train, bounds, segment, start, inputs)
    except (ProofError, ValueError) as exc:  # a codec error: inputs it cannot have trained on
        return Finding(c.rank, segment, f"re-execution failed: {exc}", a)
    for dst, hashes in sorted(rep.sent.items()):
        lo, hi = message_range(cfg, c.rank, dst, a, b)
        i = first_difference(hashes, c.sent.get(dst, [])[lo:hi])
        if i is not None:
            return Finding(c.rank, segment, f"message to {dst}", lo + i)
    i = first_difference([x for x, _ in rep.reduced], [x for x, _ in c.reduced[a:b]])
    if i is not None:
        return Finding(c.rank, segment, "all-reduce contribution", a + i)
    if rep.end_digest != c.state_digests[segment + 1]:
        return Finding(c.rank, segment, "end state", b)
    return None


@dataclass(frozen=True)
class StageVerdict:
    stage: int
    segments: tuple[int, ...]
    findings: tuple[Finding, ...]
    steps_executed: int  # member-steps re-executed

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def flagged(self) -> set[int]:
        return {f.rank for f in self.findings}


#: Opens (state blob, inputs blob) of member `rank`'s segment `j`: what the member serves
#: a verifier (ProofError or OSError when it cannot).
Fetch = Callable[[int, int], tuple[bytes, bytes]]


def verify_stage(cfg: CrewConfig, stage: int, tokens: torch.Tensor, commitments: list[Commitment],
                 fetch: Fetch, seed: bytes, fraction: float = DEFAULT_SAMPLE_FRACTION,
                 steps: int | None = None) -> StageVerdict:
    """A verifier's job for one stage (`commitments`: its replicas', by replica): check
    every replica's initial state, then re-execute the sampled segments of every replica.
    The replicas of a stage share the sample, so a segment's all-reduce is checked from
    every side. `steps`: a run shorter than the schedule."""
    train, _ = windows(tokens, cfg)
    bounds = cfg.boundaries(steps)
    n = len(bounds) - 1
    chosen = choose_segments(seed, n, sample_count(n, fraction))
    findings: list[Finding] = []
    executed = 0
    for c in commitments:
        if len(c.state_digests) != n + 1:
            findings.append(Finding(c.rank, 0, "boundary count", len(c.state_digests)))
        elif c.state_digests[0] != initial_digest(cfg, c.rank, train):
            findings.append(Finding(c.rank, 0, "initial state", 0))
    for j in chosen:
        for c in commitments:
            if any(f.rank == c.rank for f in findings):
                continue  # one finding convicts; the rest of its proof is moot
            try:
                blobs = fetch(c.rank, j)
            except (ProofError, OSError) as exc:  # a member that cannot open its segment loses it
                findings.append(Finding(c.rank, j, f"segment not served: {exc}", bounds[j]))
                continue
            found = check_segment(cfg, train, bounds, c, j, *blobs)
            executed += bounds[j + 1] - bounds[j]
            if found is not None:
                findings.append(found)
    return StageVerdict(stage, chosen, tuple(findings), executed)


def verify_crew(cfg: CrewConfig, tokens: torch.Tensor, results: list[StageResult], fetch: Fetch, seed: bytes,
                fraction: float = DEFAULT_SAMPLE_FRACTION, steps: int | None = None) -> list[StageVerdict]:
    """Every stage's verdict (results by rank). Each stage draws its own sample from `seed`
    (drawn after the commitments, so no member knows which segments will be opened)."""
    verdicts = []
    for s in range(cfg.stages):
        replicas = [Commitment.of(results[cfg.rank(s, d)]) for d in range(cfg.data_parallel)]
        stage_seed = hashlib.sha256(seed + s.to_bytes(4, "big")).digest()
        verdicts.append(verify_stage(cfg, s, tokens, replicas, fetch, stage_seed, fraction, steps))
    return verdicts


def _read_capped(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_PROOF_BLOB:
        raise ProofError(f"{path.name} is {size} bytes, over the {MAX_PROOF_BLOB}-byte cap")
    return path.read_bytes()


def local_fetch(root: Path) -> Fetch:
    """A verifier's Fetch for a local crew's proofs (launch.run_local_crew's proof_root):
    member r's segment j from root/rank-r, each file size-checked before it is read."""
    def fetch(rank: int, segment: int) -> tuple[bytes, bytes]:
        member = root / f"rank-{rank}"
        return open_state(member, segment), _read_capped(member / f"inputs-{segment}")
    return fetch
