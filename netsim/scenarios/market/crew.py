"""The market scenario's crew tasks (`MarketConfig(workload="crew")`): one small byte-level
transformer per task, trained by `crew_stages x crew_replicas` elected members.

Each task's spec is a crew task file (protocol/pol/crew_spec.py's format), published as a
blob under its hash like any spec; the shell's crew engine (node/compute/crew/market.py)
reads it, checks it against the task, and trains or checks a member on the built-in
corpus. The shape is the smallest a devnet accepts: 64 steps of one segment each (the
devnet's `min_segments`), so a member's check re-executes a few percent of its work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from netsim.scenarios.market.compute import TorchTask
from protocol.commands import LocalRequest
from protocol.encoding import sha256
from protocol.market.linkcommit import MeasuredLinks
from protocol.market.state import NO_BASE
from protocol.market.txs import DeviceClass, SubmitTask
from protocol.pol.crew_spec import crew_model_fields, parse_crew_spec
from protocol.schedule.links import LinkReport

if TYPE_CHECKING:
    from netsim.scenarios.market.build import Built, MarketConfig
    from netsim.sim import Sim

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
    model = crew_model_fields(parse_crew_spec(spec, "crew task file"))
    return SubmitTask(sha256(spec), gflops, steps, 1, 1, DeviceClass.CPU, MEMORY_MB, True, price,
                      salt, NO_BASE, 0, 0, stages=stages, data_parallel=replicas, **model)


#: How often every worker hands its measured links to its market node (the daemons'
#: `[links] period_ms` default).
LINK_PERIOD_MS = 10_000
US_PER_MS = 1_000


def probe_links(built: Built) -> Callable[[Sim], None]:
    """A sim callback that, every LINK_PERIOD_MS, gives each live worker the figures of
    its links to the other workers as the network model has them (netsim's stand-in for
    the daemon's pings and probe blob), as the daemons' link service does: a
    `MeasuredLinks` local request, which the market node commits when due."""
    workers, keys = built.layout.workers, built.layout.keys
    blob_bps = built.sim_config.network.blob_bandwidth_bps

    def probe(sim: Sim) -> None:
        for node in workers:
            reports = []
            for peer in workers:
                if peer == node or not sim.network.connected(node, peer):
                    continue
                latency_ms, bps = sim.network.figures(node, peer)
                kbps = max(1, min(2**32 - 1, (bps or blob_bps) * 8 // 1000))
                reports.append(LinkReport(keys[peer].public, latency_ms * US_PER_MS, kbps, 1, sim.now))
            if reports:
                sim.inject(node, LocalRequest(MeasuredLinks(tuple(reports))))
        sim.call_at(sim.now + LINK_PERIOD_MS, probe)

    return probe


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
