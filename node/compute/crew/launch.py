"""A local crew: one process per member on this machine, gloo over loopback TCP.

For benchmarks, tests and single-box swarms. Each member process pins one torch thread
and deterministic algorithms (so a run is bit-reproducible), joins the process group
through a TCP store hosted by rank 0, optionally wraps its channel in emulated links,
runs its stage and returns its `StageResult`. The parent waits with a deadline: if any
member fails or the deadline passes, every member is killed and `CrewAborted` says which
one failed first, so a vanished member never leaves the others blocked on a recv.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import queue
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Container
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from node.compute.crew import cheats as catalog
from node.compute.crew.channels import EmulatedLinks, GlooChannel, Link, LyingChannel, SignedChannel
from node.compute.crew.pipeline import HONEST, CrewConfig, StageResult, StageWorker, run_stage
from node.compute.crew.proof import ProofDir
from protocol.identity import Keypair

#: How long a member waits on a neighbour before gloo gives up (the parent's deadline is
#: the real bound; this only keeps orphaned members from lingering).
MEMBER_TIMEOUT_S = 120.0
#: Fresh ports tried after the first when rank 0 finds its store's port taken.
PORT_RETRIES = 3


class CrewAborted(RuntimeError):
    """A member failed or the crew ran past its deadline; every member was stopped.
    `step`: the steps done by the member it is reported to, where known (0 otherwise;
    a market member reports it in its `CrewAbort`)."""

    def __init__(self, reason: str, step: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.step = step


def interface_of(address: str) -> str | None:
    """The network interface holding `address`, for gloo's GLOO_SOCKET_IFNAME.

    gloo otherwise binds and announces the address the host name resolves to, which is
    loopback on many hosts (Debian's 127.0.1.1, containers' 127.0.0.1): members on other
    machines are then told to connect to their own loopback and the crew never forms
    (tests/test_crew_netns.py shows it across network namespaces)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == address for a in addrs):
            return str(name)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def crew_id(cfg: CrewConfig) -> bytes:
    """A local crew's name in its members' signatures (a market crew's is its task id)."""
    return hashlib.sha256(repr(cfg).encode()).digest()


def local_keys(cfg: CrewConfig) -> list[Keypair]:
    """Per-member signing keys of a local crew, derived from the seed (tests, benchmarks,
    single-box swarms: never for real funds; a daemon signs with its node key)."""
    return [Keypair.derive(f"crew/{cfg.seed}/{rank}") for rank in range(cfg.world)]


@dataclass(frozen=True)
class MemberPlan:
    """What one member process is told besides the config: its faults and its proofs."""

    links: dict[tuple[int, int], Link] | None = None
    max_steps: int | None = None
    vanish: tuple[int, int] | None = None
    liar: tuple[int, int, int] | None = None
    cheats: tuple[tuple[int, str], ...] = ()  # (rank, catalog name) of each cheating member
    proof_root: Path | None = None  # each member keeps its proof in proof_root/rank-R
    spill_root: Path | None = None  # each member's big AQ-SGD caches go in spill_root/rank-R
    progress: bool = False  # report a Progress after every step
    corrupt: tuple[int, int, int] | None = None  # (rank, dst, index): a byte flipped on the wire
    host: str = "127.0.0.1"  # where rank 0 hosts the crew's store
    #: This member's own address, which gloo binds and announces to the others ("": gloo's
    #: default, the address the host name resolves to: loopback on many hosts).
    bind: str = ""
    crew_name: bytes | None = None  # what the members' signatures name (default: crew_id(cfg))
    parent: int | None = None  # pid of the process that started the member: it dies with it
    member_dirs: bool = True  # proof_root/rank-R (False: proof_root is this member's own folder)
    timeout_s: float = MEMBER_TIMEOUT_S


@dataclass(frozen=True)
class Progress:
    """A member's report after a step: steps done, bytes it has sent, and (last stage
    only) the step's mean loss."""

    rank: int
    step: int
    sent_bytes: int
    loss: float | None


def _member(rank: int, cfg: CrewConfig, port: int, tokens: torch.Tensor, plan: MemberPlan,
            key_seed: bytes, publics: list[bytes], out: Any) -> None:
    import os

    import torch.distributed as dist

    def after_step(i: int, worker: StageWorker) -> None:
        if plan.vanish == (rank, i + 1):  # a test's member dying mid-run, like kill -9
            os._exit(137)
        if plan.parent is not None and os.getppid() != plan.parent:
            os._exit(137)  # the daemon that ran it is gone (kill -9): so is its member
        if plan.progress:
            loss = worker.losses[-1] if worker.last and worker.losses else None
            out.put(("progress", rank, Progress(rank, i + 1, worker.transcript.sent_bytes, loss)))

    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        if plan.bind:
            ifname = interface_of(plan.bind)
            if ifname is None:
                raise CrewAborted(f"no interface of this host has the crew address {plan.bind}")
            os.environ["GLOO_SOCKET_IFNAME"] = ifname
        dist.init_process_group("gloo", init_method=f"tcp://{plan.host}:{port}", rank=rank,
                                world_size=cfg.world, timeout=timedelta(seconds=plan.timeout_s))
        channel: Any = GlooChannel()
        if plan.links is not None:
            channel = EmulatedLinks(channel, rank, plan.links)
        emulated = channel
        if plan.corrupt is not None and plan.corrupt[0] == rank:  # after signing: the signature breaks
            channel = LyingChannel(channel, plan.corrupt[1], plan.corrupt[2])
        signed = channel = SignedChannel(channel, rank, key_seed, publics, plan.crew_name or crew_id(cfg))
        if plan.liar is not None and plan.liar[0] == rank:  # tampers after hashing, before signing
            channel = LyingChannel(channel, plan.liar[1], plan.liar[2])
        behaviour = HONEST
        for who, name in plan.cheats:
            if who == rank:
                behaviour = catalog.build(name, cfg, cfg.boundaries(plan.max_steps)[-1])
        here = f"rank-{rank}" if plan.member_dirs else ""
        sink = ProofDir(plan.proof_root / here) if plan.proof_root is not None else None
        spill = plan.spill_root / here if plan.spill_root is not None else None
        result = run_stage(cfg, rank, channel, tokens, plan.max_steps, after_step, behaviour, sink, spill)
        result = replace(result, received_sigs=signed.received_sigs)
        if isinstance(emulated, EmulatedLinks):
            emulated.close()  # every message handed over before this member reports and leaves
        out.put(("done", rank, result))
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:  # reported to the parent, which aborts the crew
        out.put(("error", rank, traceback.format_exc()))


def _dead(procs: list[Any], skip: Container[int]) -> list[int]:
    """Members that exited with an error, less those in `skip`."""
    return [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in skip]


def _first_cause(procs: list[Any], rank: int, error: str) -> str:
    """Why the crew stopped: a member that died without a word is the cause its
    neighbours' failures (connection reset, timeout) follow from, so it is named first."""
    time.sleep(0.5)  # the dead member's exit code lands a moment after its neighbour notices
    dead = _dead(procs, {rank})
    if dead:
        return (f"member {dead[0]} exited with code {procs[dead[0]].exitcode}; "
                f"then member {rank} failed:\n{error}")
    return f"member {rank} failed:\n{error}"


def run_local_crew(cfg: CrewConfig, tokens: torch.Tensor, links: dict[tuple[int, int], Link] | None = None,
                   deadline_s: float = 600.0, max_steps: int | None = None,
                   vanish: tuple[int, int] | None = None,
                   liar: tuple[int, int, int] | None = None,
                   cheats: dict[int, str] | None = None,
                   proof_root: Path | None = None,
                   on_progress: Callable[[Progress], None] | None = None,
                   corrupt: tuple[int, int, int] | None = None) -> list[StageResult]:
    """Run a crew of cfg.world processes to the end; results by rank (stage-major: with one
    replica, by stage). Every boundary message is signed (`SignedChannel`, keys from
    `local_keys`). `vanish` = (rank, step): that member exits abruptly after `step`
    steps; `liar` = (rank, dst, index): that member's index-th message to dst is tampered
    after it has been hashed (a boundary liar: `LyingChannel`); `cheats` = {rank: name}:
    those members run cheats of node/compute/crew/cheats.py; `corrupt` = (rank, dst,
    index): that member's index-th message to dst has a byte flipped after it was signed,
    as by a hostile peer or a broken path, which its receiver refuses. All are fault
    injection for tests and benchmarks. With `proof_root`, every member keeps its proof
    (proof.ProofDir) under proof_root/rank-R and commits its boundary state digests.
    `on_progress` is called in this process with every member's `Progress`, each step.

    The store's port is picked free and then bound by rank 0 a moment later; if another
    process took it in between, rank 0 fails before any member has trained, and the crew
    is started again on a new port (PORT_RETRIES times)."""
    spill_root = Path(tempfile.mkdtemp(prefix="polnet-crew-spill-"))
    plan = MemberPlan(links, max_steps, vanish, liar, tuple(sorted((cheats or {}).items())), proof_root,
                      spill_root, on_progress is not None, corrupt)
    try:
        for attempt in range(PORT_RETRIES + 1):
            try:
                return _run_crew(cfg, tokens, plan, deadline_s, on_progress)
            except CrewAborted as exc:
                if "address already in use" not in str(exc).lower() or attempt == PORT_RETRIES:
                    raise
        raise AssertionError("unreachable")
    finally:
        shutil.rmtree(spill_root, ignore_errors=True)


def _run_crew(cfg: CrewConfig, tokens: torch.Tensor, plan: MemberPlan, deadline_s: float,
              on_progress: Callable[[Progress], None] | None) -> list[StageResult]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    keys = local_keys(cfg)
    publics = [k.public for k in keys]
    procs = [ctx.Process(target=_member, args=(r, cfg, port, tokens, plan, keys[r].seed(), publics, out),
                         daemon=True) for r in range(cfg.world)]
    for p in procs:
        p.start()
    results: dict[int, StageResult] = {}
    end = time.monotonic() + deadline_s
    try:
        while len(results) < cfg.world:
            left = end - time.monotonic()
            if left <= 0:
                raise CrewAborted(f"crew ran past its {deadline_s:.0f} s deadline "
                                  f"({sorted(results)} of {cfg.world} members done)")
            try:
                kind, rank, payload = out.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = _dead(procs, results)
                if dead:
                    code = procs[dead[0]].exitcode
                    raise CrewAborted(f"member {dead[0]} exited with code {code}") from None
                continue
            if kind == "progress":
                if on_progress is not None:
                    on_progress(payload)
                continue
            if kind == "error":
                raise CrewAborted(_first_cause(procs, rank, payload))
            results[rank] = payload
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)
    return [results[r] for r in range(cfg.world)]


def run_member(cfg: CrewConfig, tokens: torch.Tensor, rank: int, host: str, port: int, key_seed: bytes,
               publics: list[bytes], crew_name: bytes, proof_dir: Path, deadline_s: float = 600.0,
               cheat: str | None = None, timeout_s: float = MEMBER_TIMEOUT_S,
               on_progress: Callable[[Progress], None] | None = None, bind: str = "") -> StageResult:
    """Run one member of a crew whose other members are elsewhere (a market crew: each
    daemon runs its own member): one process, joining the crew's store at host:port
    (rank 0 hosts it there), signing with `key_seed` (its node key) under `crew_name`,
    its gloo traffic bound to `bind` (its own crew address; "": gloo's default).
    Its proof goes in `proof_dir`. Raises `CrewAborted` with the steps it did when the
    crew stops (a neighbour gone, the deadline, a refused message). The member process
    exits by itself if this process dies, so a killed daemon leaves no member behind."""
    import os

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    spill = Path(tempfile.mkdtemp(prefix="polnet-crew-spill-"))
    cheats = ((rank, cheat),) if cheat else ()
    plan = MemberPlan(cheats=cheats, proof_root=proof_dir, spill_root=spill, progress=True, host=host,
                      crew_name=crew_name, parent=os.getpid(), member_dirs=False, timeout_s=timeout_s,
                      bind=bind)
    args = (rank, cfg, port, tokens, plan, key_seed, publics, out)
    proc = ctx.Process(target=_member, args=args, daemon=True)
    proc.start()
    step = 0
    end = time.monotonic() + deadline_s
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise CrewAborted(f"member {rank} ran past its {deadline_s:.0f} s deadline", step)
            try:
                kind, _, payload = out.get(timeout=min(left, 1.0))
            except queue.Empty:
                if proc.exitcode is not None:
                    raise CrewAborted(f"member {rank} exited with code {proc.exitcode}", step) from None
                continue
            if kind == "progress":
                step = max(step, payload.step)
                if on_progress is not None:
                    on_progress(payload)
            elif kind == "error":
                raise CrewAborted(f"member {rank} failed:\n{payload}", step)
            else:
                result: StageResult = payload
                proc.join(timeout=30)
                return result
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5)
        shutil.rmtree(spill, ignore_errors=True)
