"""The market scenario's crew tasks (`MarketConfig(workload="crew")`): one small byte-level
transformer per task, trained by `crew_stages x crew_replicas` elected members.

Each task's spec is a crew task file (protocol/pol/crew_spec.py's format), published as a
blob under its hash like any spec; the shell's crew engine (node/compute/crew/market.py)
reads it, checks it against the task, and trains or checks a member on the built-in
corpus. The shape is the smallest a devnet accepts: 64 steps of one segment each (the
devnet's `min_segments`), so a member's check re-executes a few percent of its work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsim.scenarios.market.compute import TorchTask
from protocol.encoding import sha256
from protocol.market.state import NO_BASE
from protocol.market.txs import DeviceClass, SubmitTask

if TYPE_CHECKING:
    from netsim.scenarios.market.build import MarketConfig

#: Crew cheats (node/compute/crew/cheats.py) that apply wherever the election seats the
#: cheater: a stage-specific one (data order on the first stage, a lazy backward pass
#: past it, a negated gradient among replicas) would be a no-op at some seats.
CREW_ATTACKS = ("skipped_steps", "truncated", "frozen", "noisy")
#: Steps per epoch and epochs: 64 one-step segments.
STEPS_PER_EPOCH, EPOCHS = 8, 8
MICRO_BATCH, MICRO_BATCHES = 2, 2
#: Declared work per member (GFLOP): the crew's budget is this times its size.
MEMBER_GFLOPS = 250
OFFERED_PRICE = 2_000
MEMORY_MB = 256


def crew_file(stages: int, replicas: int, seed: int) -> bytes:
    """A crew task file for a crew of `stages x replicas` (64 steps, one per segment)."""
    n_train = STEPS_PER_EPOCH * MICRO_BATCH * MICRO_BATCHES * replicas
    return "\n".join((
        f"stages = {stages}", f"data_parallel = {replicas}", f"epochs = {EPOCHS}", f"n_train = {n_train}",
        "n_val = 16", f"micro_batch = {MICRO_BATCH}", f"micro_batches = {MICRO_BATCHES}", "bits = 3",
        "grad_bits = 8", "segment_steps = 1", "lr = 0.003", f"seed = {seed}",
        "[model]", f"blocks = {max(2, stages)}", "width = 16", "heads = 2", "context = 16", "",
    )).encode()


def crew_submit(spec: bytes, stages: int, replicas: int, salt: int, price: int = OFFERED_PRICE) -> SubmitTask:
    """The transaction of a crew task of `crew_file`'s shape, offering `price` per GFLOP."""
    steps = STEPS_PER_EPOCH * EPOCHS
    gflops = MEMBER_GFLOPS * stages * replicas
    return SubmitTask(sha256(spec), gflops, steps, 1, 1, DeviceClass.CPU, MEMORY_MB, True, price,
                      salt, NO_BASE, 0, 0, stages=stages, data_parallel=replicas)


def crew_tasks(cfg: MarketConfig) -> tuple[list[SubmitTask], dict[bytes, TorchTask]]:
    """`cfg.tasks` crew tasks, each its own model seed."""
    stages, replicas = cfg.crew_stages, cfg.crew_replicas
    txs: list[SubmitTask] = []
    out: dict[bytes, TorchTask] = {}
    for i in range(cfg.tasks):
        spec = crew_file(stages, replicas, 1 + i)
        tx = crew_submit(spec, stages, replicas, i)
        out[tx.spec_hash] = TorchTask(spec, None, "crew-corpus")
        txs.append(tx)
    return txs, out
