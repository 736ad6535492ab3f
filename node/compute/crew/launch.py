"""A local crew: one process per member on this machine, gloo over loopback TCP.

For benchmarks, tests and single-box swarms. Each member process pins one torch thread
and deterministic algorithms (so a run is bit-reproducible), joins the process group
through a TCP store hosted by rank 0, optionally wraps its channel in emulated links,
runs its stage and returns its `StageResult`. The parent waits with a deadline: if any
member fails or the deadline passes, every member is killed and `CrewAborted` says which
one failed first, so a vanished member never leaves the others blocked on a recv.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import time
import traceback
from collections.abc import Container
from datetime import timedelta
from typing import Any

import torch

from node.compute.crew.channels import EmulatedLinks, GlooChannel, Link, LyingChannel
from node.compute.crew.pipeline import CrewConfig, StageResult, run_stage

#: How long a member waits on a neighbour before gloo gives up (the parent's deadline is
#: the real bound; this only keeps orphaned members from lingering).
MEMBER_TIMEOUT_S = 120.0


class CrewAborted(RuntimeError):
    """A member failed or the crew ran past its deadline; every member was stopped."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _member(rank: int, cfg: CrewConfig, port: int, tokens: torch.Tensor,
            links: dict[tuple[int, int], Link] | None, max_steps: int | None,
            vanish: tuple[int, int] | None, liar: tuple[int, int, int] | None, out: Any) -> None:
    import os

    import torch.distributed as dist

    def after_step(i: int) -> None:
        if vanish is not None and vanish == (rank, i + 1):  # a test's member dying mid-run, like kill -9
            os._exit(137)

    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=cfg.world, timeout=timedelta(seconds=MEMBER_TIMEOUT_S))
        reduce = None
        if cfg.data_parallel > 1:  # every member creates every stage's group, in the same order
            groups = [dist.new_group([cfg.rank(s, d) for d in range(cfg.data_parallel)])
                      for s in range(cfg.stages)]
            group = groups[cfg.position(rank)[0]]

            def reduce(flat: torch.Tensor) -> None:
                dist.all_reduce(flat, group=group)
        channel: Any = GlooChannel()
        if links is not None:
            channel = EmulatedLinks(channel, rank, links)
        emulated = channel
        if liar is not None and liar[0] == rank:
            channel = LyingChannel(channel, liar[1], liar[2])
        result = run_stage(cfg, rank, channel, tokens, max_steps, after_step, reduce)
        if isinstance(emulated, EmulatedLinks):
            emulated.close()  # every message handed over before this member reports and leaves
        out.put((rank, result, None))
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:  # reported to the parent, which aborts the crew
        out.put((rank, None, traceback.format_exc()))


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
                   liar: tuple[int, int, int] | None = None) -> list[StageResult]:
    """Run a crew of cfg.world processes to the end; results by rank (stage-major: with one
    replica, by stage). `vanish` = (rank, step): that member exits abruptly after `step`
    steps; `liar` = (rank, dst, index): that member's index-th message to dst is tampered
    after it has been hashed (a boundary liar: `LyingChannel`). Both are fault injection
    for tests and benchmarks."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_member, args=(r, cfg, port, tokens, links, max_steps, vanish, liar, out),
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
                rank, result, error = out.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = _dead(procs, results)
                if dead:
                    code = procs[dead[0]].exitcode
                    raise CrewAborted(f"member {dead[0]} exited with code {code}") from None
                continue
            if error is not None:
                raise CrewAborted(_first_cause(procs, rank, error))
            results[rank] = result
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)
    return [results[r] for r in range(cfg.world)]
