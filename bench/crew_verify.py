"""The verification part of bench/crew.py (run it there: `bench/crew.py --verify-only`).

Crews of a small model (4 blocks, d_model 32, context 32; 4 stages x 1, and 2 stages x 2
for the attacks that need replicas) train 8 epochs of 64 windows (64 steps) with 2-bit
AQ-SGD and commit their proofs: a checkpoint digest after every step (segment_steps 1)
and their signed transcripts. In each run one member cheats, with a catalog attack
(node/compute/crew/cheats.py) or as a boundary liar (launch's `liar`), or none does. A
verifier then, for each of SEEDS sampling seeds drawn after the commitments, re-executes
the sampled segments of every member (protocol/pol/sampling.py's rule: the last segment
and 1/32 of the others, at least 2) and cross-checks every pair's transcripts, blaming
each mismatch on the member the receiver's signatures convict. A member is convicted by
a finding in its re-execution or by blame.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from node.compute import datasets
from node.compute.crew.crosscheck import blame, cross_check
from node.compute.crew.launch import crew_id, local_keys, run_local_crew
from node.compute.crew.model import ModelShape
from node.compute.crew.pipeline import CrewConfig, StageResult
from node.compute.crew.proof import local_fetch, open_state, stored_bytes, verify_crew

FRACTION_GOAL = 0.05
SEEDS = 8
PIPE = CrewConfig(stages=4, shape=ModelShape(blocks=4, width=32, heads=2, context=32), micro_batch=4,
                  micro_batches=2, epochs=8, n_train=64, n_val=16, lr=3e-3, seed=7, bits=2, segment_steps=1)
DP = replace(PIPE, stages=2, data_parallel=2, micro_batch=2)


@dataclass(frozen=True)
class Case:
    """One crew run: who cheats and how (cheat is a catalog name; liar = (rank, dst, index))."""

    name: str
    cfg: CrewConfig
    cheater: int | None = None
    cheat: str | None = None
    liar: tuple[int, int, int] | None = None


CASES = [
    Case("honest", PIPE),
    Case("skipped_steps", PIPE, 2, "skipped_steps"),
    Case("truncated", PIPE, 1, "truncated"),
    Case("frozen", PIPE, 3, "frozen"),
    Case("lazy_backward", PIPE, 2, "lazy_backward"),
    Case("noisy", PIPE, 1, "noisy"),
    Case("data_order", PIPE, 0, "data_order"),
    Case("liar_forward", PIPE, 1, liar=(1, 2, 37)),
    Case("liar_backward", PIPE, 3, liar=(3, 2, 90)),
    Case("honest_dp", DP),
    Case("negated_gradient", DP, DP.rank(0, 1), "negated_gradient"),
    Case("liar_replica", DP, DP.rank(1, 0), liar=(DP.rank(1, 0), DP.rank(1, 1), 20)),
]


def convicted(cfg: CrewConfig, results: list[StageResult], root: Path,
              seed: bytes) -> tuple[set[int], int, float]:
    """Members convicted under one sampling seed, member-steps re-executed, verifier seconds."""
    t = time.perf_counter()
    verdicts = verify_crew(cfg, datasets.corpus().tokens, results, local_fetch(root), seed)
    guilty = {f.rank for v in verdicts for f in v.findings}
    publics = [k.public for k in local_keys(cfg)]
    for m in cross_check(cfg, results):
        who = blame(m, results, publics, crew_id(cfg))
        if who is not None:
            guilty.add(who)
    return guilty, sum(v.steps_executed for v in verdicts), time.perf_counter() - t


@dataclass
class Tally:
    detected: int = 0
    cheating: int = 0  # cheating (run, seed) trials
    honest_convicted: int = 0
    honest_trials: int = 0  # honest (member, run, seed) trials
    executed: int = 0  # member-steps re-executed
    trained: int = 0  # member-steps trained (counted once per seed, like executed)
    verify_s: float = 0.0
    train_s: float = 0.0
    stored: int = 0  # bytes of every member's proof on disk
    full: int = 0  # what full snapshots at every boundary (and the same inputs) would take


def run_case(case: Case, seeds: list[bytes], tally: Tally) -> None:
    """One crew run with its proofs in a scratch folder, judged under every seed."""
    root = Path(tempfile.mkdtemp(prefix="polnet-crew-proof-"))
    try:
        t = time.perf_counter()
        cheats = {case.cheater: case.cheat} if case.cheat is not None and case.cheater is not None else None
        results = run_local_crew(case.cfg, datasets.corpus().tokens, deadline_s=1800, liar=case.liar,
                                 cheats=cheats, proof_root=root)
        crew_s = time.perf_counter() - t
        n_states = len(results[0].state_digests)
        for r in range(case.cfg.world):
            tally.stored += stored_bytes(root / f"rank-{r}")
            inputs = sum(f.stat().st_size for f in (root / f"rank-{r}").glob("inputs-*"))
            tally.full += n_states * len(open_state(root / f"rank-{r}", n_states - 1)) + inputs
        caught = 0
        honest = {r for r in range(case.cfg.world) if r != case.cheater}
        for seed in seeds:
            guilty, steps, secs = convicted(case.cfg, results, root, seed)
            tally.executed += steps
            tally.trained += case.cfg.world * case.cfg.total_steps
            tally.verify_s += secs
            tally.train_s += sum(sum(r.step_seconds) for r in results)
            caught += case.cheater in guilty
            tally.honest_trials += len(honest)
            tally.honest_convicted += len(guilty & honest)
        if case.cheater is not None:
            tally.detected += caught
            tally.cheating += len(seeds)
        who = "nobody" if case.cheater is None else f"member {case.cheater}"
        print(f"  {case.name:17} cheater {who:9}: convicted in {caught}/{len(seeds)} seeds; honest members "
              f"convicted so far {tally.honest_convicted}  ({crew_s:.0f} s crew)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main_part(quick: bool = False) -> dict[str, float]:
    """Run every case, print a line each, return the verification keys of the JSON line."""
    seeds = [f"beacon/{i}".encode() for i in range(2 if quick else SEEDS)]
    cases = [c for c in CASES if not quick or c.name in ("honest", "frozen", "liar_forward")]
    print(f"verification: {PIPE.shape}, {PIPE.total_steps} steps, a checkpoint every "
          f"{PIPE.segment_steps}, {len(seeds)} sampling seeds per run", flush=True)
    tally = Tally()
    for case in cases:
        run_case(case, seeds, tally)
    fraction, time_fraction = tally.executed / tally.trained, tally.verify_s / tally.train_s
    detection = tally.detected / max(1, tally.cheating)
    false_pos = tally.honest_convicted / max(1, tally.honest_trials)
    print(f"proofs on disk: {tally.stored / 1e6:.1f} MB for every member of every run, full snapshots at "
          f"every boundary would take {tally.full / 1e6:.1f} MB ({tally.stored / tally.full:.3f} of it)")
    print(f"re-executed {tally.executed} of {tally.trained} member-steps: {fraction:.4f} (goal <= "
          f"{FRACTION_GOAL}); verifier time / members' step time {time_fraction:.4f}; detection "
          f"{detection:.3f} (goal 1), false positives {false_pos:.3f} (goal 0)", flush=True)
    return {"crew_verify_compute_fraction": round(fraction, 4),
            "crew_verify_time_fraction": round(time_fraction, 4),
            "crew_detection_rate": round(detection, 4),
            "crew_false_positive_rate": round(false_pos, 4),
            "crew_proof_bytes_vs_full_snapshots": round(tally.stored / tally.full, 4)}
