"""Dispute benchmark on the daemon's compute path: bisection to one op, then one op re-run.

Run: .venv/bin/python bench/disputes.py [--quick]

For an MLP (two widths), a CNN and a character transformer, each party is the daemon's
own compute runner (node/daemon/compute.py over a blob
directory per node, blobs fetched from the other nodes' directories by digest): the
solver trains and publishes its proof, a verifier re-executes a segment from the
committed checkpoint, the two bisect the disputed segment exactly as the ledger game
does (defender's digest at the midpoint first, the accuser's decides the half), the
defender reveals the digests behind the last agreed position, and a validator fetches
that op's inputs by digest and re-executes it alone. Per MLP spec and per attack:

  arbitration_vs_step   the validator's compute for the one op / one training step of
                        the same spec, measured side by side in this run (worst case
                        over specs and attacks);
  rounds_vs_bound       bisection rounds played / (ceil(log2 k) + ceil(log2 ops));
  detected              the validator refuted the cheat (and upheld an honest solver).

The last line is one JSON object with `arbitration_vs_step`, `rounds_vs_bound`,
`detection_rate`, `false_positive_rate` and `restart_ready_ratio_500_vs_50` (ready time of
a validator daemon after kill -9 at height 500 over at height 50, from bench/restart.py).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import trio

from node.compute import datasets
from node.compute.trainer import Run, run_step
from node.daemon.blobdir import BlobDir
from node.daemon.compute import MarketComputeRunner
from node.transport.errors import BlobNotFound
from protocol.market.jobs import (
    ArbitrationJob,
    ArbitrationResult,
    MarketTrainJob,
    MarketWork,
    RevealJob,
    SegmentCheckJob,
    StateHashJob,
    TaskFacts,
)
from protocol.pol.ops import step_ops
from protocol.pol.spec import LossKind, OptimizerKind, OptimizerSpec, ReproProfile, TaskSpec, linear, relu
from protocol.records import encode_record, record_hash

SOLVER, VERIFIER, VALIDATOR, SUBMITTER = b"S" * 32, b"V" * 32, b"A" * 32, b"U" * 32
#: Arbitrations per dispute (the op's time is their median: sub-millisecond ops on a shared
#: box need several samples; the first also pays for loading the spec and dataset).
REPEATS = 15
ATTACKS = ("skipped_steps", "truncated", "noisy_weights", "copied_checkpoints", "interpolated", "data_order",
           "bisect_inconsistent")


def mlp(data: datasets.Dataset, hidden: tuple[int, ...], steps: int, k: int) -> TaskSpec:
    widths = [int(data.x.shape[1]), *hidden, int(data.y.max()) + 1]
    layers: list[Any] = []
    for i in range(len(widths) - 1):
        layers += [linear(widths[i], widths[i + 1])] + ([relu()] if i < len(widths) - 2 else [])
    return TaskSpec(1, (widths[0],), widths[-1], tuple(layers), LossKind.CROSS_ENTROPY,
                    OptimizerSpec(OptimizerKind.ADAM, 0.01), 64, steps, k, data.digest, len(data), 1, 2, 3,
                    ReproProfile(threads=1))


class Network:
    """Each node's blob directory, reachable from every other node by digest."""

    def __init__(self, root: Path, spec: TaskSpec, data: Any) -> None:
        self.dirs: dict[bytes, BlobDir] = {}
        for who in (SOLVER, VERIFIER, VALIDATOR, SUBMITTER):
            d = BlobDir(root / who[:1].hex())
            d.root.mkdir(parents=True)
            self.dirs[who] = d
        self.dirs[SUBMITTER].put(encode_record(spec))
        self.dirs[SUBMITTER].put(data.blob)

    async def fetch(self, digest: bytes, max_size: int, peers: Any = None) -> bytes:
        for who, d in self.dirs.items():
            if peers is not None and who not in peers:
                continue
            blob = d.read(digest)
            if blob is not None and len(blob) <= max_size:
                return blob
        raise BlobNotFound("nobody has it")


@dataclass
class Outcome:
    spec: str
    attack: str | None
    rounds: int
    bound: int
    op: str
    op_s: float
    fetch_s: float
    step_s: float
    defender_right: bool


def one_dispute(spec: TaskSpec, data: Any, attack: str | None, root: Path) -> Outcome:
    net = Network(root, spec, data)
    runners = {who: MarketComputeRunner(net.dirs[who], net.fetch, who,
                                        cheat=attack if who == SOLVER else None)
               for who in (SOLVER, VERIFIER, VALIDATOR)}
    ops = len(step_ops(spec))
    facts = TaskFacts(b"\x01" * 32, record_hash(spec), SUBMITTER, SOLVER, None, spec.steps,
                      spec.checkpoint_interval, ops, 0)

    def run(who: bytes, job: Any) -> Any:
        async def main() -> Any:
            return await trio.to_thread.run_sync(runners[who], "bench", MarketWork(facts, job))

        return trio.run(main)

    trained = run(SOLVER, MarketTrainJob(facts.task_id, facts.spec_hash))
    facts = replace(facts, proof_root=trained.merkle_root)
    segment = spec.num_checkpoints - 2  # the final segment: every attack shows there
    run(VERIFIER, SegmentCheckJob(facts.task_id, trained.merkle_root, segment, 0))
    k = spec.checkpoint_interval
    lo, hi = 0, k * ops
    hi_hash = run(SOLVER, StateHashJob(facts.task_id, segment, hi, True)).digest
    rounds = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        mine = run(SOLVER, StateHashJob(facts.task_id, segment, mid, True)).digest
        theirs = run(VERIFIER, StateHashJob(facts.task_id, segment, mid, False)).digest
        rounds += 1
        if mine == theirs:
            lo = mid
        else:
            hi, hi_hash = mid, mine
    reveal = run(SOLVER, RevealJob(facts.task_id, segment, lo))
    job = ArbitrationJob(facts.task_id, segment, lo, reveal.weights, reveal.optimizer, reveal.prefix,
                         reveal.claimed, hi_hash, 0)
    # Re-run by the same validator a few times: the first pays for loading the spec, the
    # dataset and checkpoint 0 (reported as fetch time); the op's own time is the median.
    verdicts: list[ArbitrationResult] = [run(VALIDATOR, job) for _ in range(REPEATS)]
    verdict = verdicts[0]
    op_s = statistics.median(v.seconds for v in verdicts)
    bound = math.ceil(math.log2(k)) + math.ceil(math.log2(ops))
    assert all(v.defender_right == verdict.defender_right for v in verdicts)
    return Outcome(spec_name(spec), attack, rounds, bound, verdict.op, op_s, verdict.fetch_seconds,
                   step_seconds(spec, data), verdict.defender_right)


def spec_name(spec: TaskSpec) -> str:
    if spec.is_token_model:
        return f"transformer-ctx{spec.input_shape[0]}"
    if len(spec.input_shape) == 3:
        return "cnn-" + "x".join(map(str, spec.input_shape))
    widths = [layer.in_size for layer in spec.layers if layer.in_size] + [spec.num_classes]
    return "mlp-" + "-".join(map(str, widths))


def step_seconds(spec: TaskSpec, data: Any, repeats: int = 3 * REPEATS) -> float:
    """Median seconds of one training step of this spec (the same op sequence the solver runs)."""
    run = Run(spec, data)
    state = run.state_at(0)
    samples = []
    for t in range(repeats):
        t0 = time.perf_counter()
        state = run_step(spec, data, state, t)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one spec, three attacks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from workloads import cnn_spec, lm_spec  # bench/workloads.py: the specs it measures

    digits, images = datasets.digits(), datasets.digit_images()
    text = datasets.text(datasets.corpus_text()[:200_000])
    specs: list[tuple[TaskSpec, Any]] = [(mlp(digits, (64,), 128, 2), digits),
                                         (mlp(digits, (256, 256), 128, 2), digits),
                                         (cnn_spec(images, 128, 2), images), (lm_spec(text, 128, 2), text)]
    attacks: tuple[str | None, ...] = (None, *ATTACKS)
    if args.quick:
        specs, attacks = specs[:1], (None, "skipped_steps", "bisect_inconsistent")
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="polnet-bench-disputes-") as tmp:
        for s, (spec, data) in enumerate(specs):
            for a, attack in enumerate(attacks):
                o = one_dispute(spec, data, attack, Path(tmp) / f"{s}-{a}")
                outcomes.append(o)
                print(f"{o.spec:22} {o.attack!s:20} rounds {o.rounds:2}/{o.bound:2}  op {o.op:12} "
                      f"op {o.op_s * 1e3:7.3f} ms  fetch {o.fetch_s * 1e3:7.2f} ms  "
                      f"step {o.step_s * 1e3:7.3f} ms"
                      f"  defender_right {o.defender_right}", flush=True)
    cheats = [o for o in outcomes if o.attack is not None]
    honest = [o for o in outcomes if o.attack is None]
    result = {
        "arbitration_vs_step": round(max(o.op_s / o.step_s for o in outcomes), 4),
        "arbitration_fetch_vs_step": round(max(o.fetch_s / o.step_s for o in outcomes), 3),
        "rounds_vs_bound": round(max(o.rounds / o.bound for o in outcomes), 3),
        "detection_rate": sum(not o.defender_right for o in cheats) / len(cheats),
        "false_positive_rate": sum(not o.defender_right for o in honest) / len(honest),
        "disputes": len(outcomes),
    }
    from restart import measure_restart_ready_ratio  # bench/restart.py: real daemons, kill -9

    # The solver must still defend after a restart, and a restart must not replay the world.
    result["restart_ready_ratio_500_vs_50"] = round(measure_restart_ready_ratio(1 if args.quick else 3), 3)
    print(f"restart ready after kill -9, height 500 / height 50: {result['restart_ready_ratio_500_vs_50']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
