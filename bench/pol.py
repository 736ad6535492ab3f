"""Proof-of-learning benchmark: verification and arbitration cost vs training, detection.

Run: .venv/bin/python bench/pol.py [--seeds N]

Side by side in one run, on a small real task (digits, MLP 64-32-10, Adam):
  verification compute / training compute at default sampling, with every catalog
  attack still caught; one referee op / one training step / the whole training;
  bisection rounds vs ceil(log2 k) + ceil(log2 ops); proof size vs checkpoint data;
  detection and false-positive rates over many sampling seeds (torch) and many
  cheat positions (synthetic trainer). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from node.compute import attacks, datasets
from node.compute.checkpoints import checkpoint_bytes
from node.compute.dispute import challenger_run, dispute_segment
from node.compute.ops import execute, gather
from node.compute.profiling import profile
from node.compute.trainer import Run, accuracy, run_step
from node.compute.verify import verify_proof
from protocol.pol.arena import play
from protocol.pol.merkle import inclusion_proof, leaf_hash
from protocol.pol.messages import DisputeOpen
from protocol.pol.ops import step_ops
from protocol.pol.oracle import HonestOracle, state_hash_of
from protocol.pol.pinpoint import Outcome
from protocol.pol.sampling import op_tolerance, sample_count
from protocol.pol.spec import LossKind, OptimizerKind, OptimizerSpec, ReproProfile, TaskSpec, linear, relu
from protocol.pol.synthetic import Cheat, SyntheticRun
from protocol.pol.synthetic import referee as synthetic_referee
from protocol.records import encode_record


def task(data: datasets.Dataset, steps: int, k: int) -> TaskSpec:
    return TaskSpec(
        1,
        (64,),
        10,
        (linear(64, 32), relu(), linear(32, 10)),
        LossKind.CROSS_ENTROPY,
        OptimizerSpec(OptimizerKind.ADAM, 0.01),
        32,
        steps,
        k,
        data.digest,
        len(data),
        1,
        2,
        3,
        ReproProfile(threads=1),
    )


def timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def op_timing(spec: TaskSpec, run: Run) -> tuple[float, float]:
    """(median seconds of the slowest single op re-executed alone, median seconds of one step)."""
    data, state = run.data, run.state_at(spec.steps - 1)
    ops = step_ops(spec)
    outs: list = []  # type: ignore[type-arg]
    run_step(spec, data, state, spec.steps - 1, lambda j, t, o: outs.append(o))
    start = [*state.params, *state.opt]
    per_op = []
    for op in ops[:-1]:
        ins = gather(op, start, outs)
        samples = [
            timed(lambda op=op, ins=ins: execute(spec, data, op, spec.steps - 1, ins))[1] for _ in range(20)
        ]
        per_op.append(statistics.median(samples))
    step_t = statistics.median(
        timed(lambda: run_step(spec, data, state, spec.steps - 1))[1] for _ in range(20)
    )
    return max(per_op), step_t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=25, help="sampling seeds per attack (torch)")
    ap.add_argument("--synthetic", type=int, default=100, help="synthetic cheat positions")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = datasets.digits()
    spec = task(data, steps=640, k=10)
    print(
        f"task: digits MLP 64-32-10 Adam, {spec.steps} steps, k={spec.checkpoint_interval}, "
        f"{spec.num_segments} segments, default sample {sample_count(spec.num_segments)} segments"
    )

    honest, train_s = timed(lambda: attacks.honest(spec, data))
    print(f"train: {train_s:.2f} s, accuracy {accuracy(spec, data, honest.state_at(spec.steps)):.3f}")
    prof, prof_s = timed(lambda: profile(spec, data, spec.checkpoint_interval, (2,)))
    thr = prof.threshold
    print(
        f"profile: noise {max(prof.noise):.2e} (1 vs 2 threads), signal {min(prof.signal):.2e} "
        f"(another data seed) -> threshold {thr:.2e}, op tolerance {op_tolerance(thr):.0e} ({prof_s:.2f} s)"
    )
    fetch = lambda i: honest.state_at(i * spec.checkpoint_interval)  # noqa: E731
    verdict, verify_s = timed(lambda: verify_proof(spec, data, honest.leaves(), fetch, b"\x01" * 32, thr))
    step_fraction = verdict.steps_executed / spec.steps
    print(
        f"verify: {verify_s:.3f} s = {verify_s / train_s:.2%} of training wall time; "
        f"{verdict.steps_executed} of {spec.steps} steps = {step_fraction:.2%} of training compute "
        "(goal <= 5%)"
    )

    # --- detection over sampling seeds, every catalog entry ------------------------------------
    caught = total = false_pos = honest_checks = 0
    rounds: list[tuple[int, int]] = []
    for attack in attacks.CATALOG:
        run = attack.build(spec, data, 0)
        f = lambda i, r=run: r.state_at(i * spec.checkpoint_interval)  # noqa: E731
        flagged = sum(
            not verify_proof(spec, data, run.leaves(), f, bytes([s]) * 32, thr).passed
            for s in range(args.seeds)
        )
        if attack.honest:
            false_pos += flagged
            honest_checks += args.seeds
        else:
            caught += flagged
            total += args.seeds
        line = f"  {attack.name:20s} flagged {flagged}/{args.seeds}"
        last = spec.num_segments - 1
        verifier = challenger_run(spec, data, run, last)
        end_differs = verifier.state_at(spec.steps).leaf(0, 0) != run.state_at(spec.steps).leaf(0, 0)
        if not attack.honest and end_differs:
            rep = dispute_segment(spec, data, run, verifier, last, op_tolerance(thr))
            rounds.append((rep.rounds, rep.bound))
            line += f"; pinpoint {rep.outcome.name} at step {rep.step} op {rep.op_index}"
            line += f" in {rep.rounds}/{rep.bound} rounds"
        print(line)
    flagged_honest = sum(
        not verify_proof(spec, data, honest.leaves(), fetch, bytes([s]) * 32, thr).passed
        for s in range(args.seeds)
    )
    false_pos += flagged_honest
    honest_checks += args.seeds
    detection, fpr = caught / total, false_pos / honest_checks
    print(f"detection rate {detection:.3f} over {total} checks; false positives {false_pos}/{honest_checks}")

    # --- arbitration cost ------------------------------------------------------------------------
    op_s, step_s = op_timing(spec, honest)
    print(
        f"arbitration: slowest single op {op_s * 1e6:.0f} us vs one step {step_s * 1e6:.0f} us "
        f"({op_s / step_s:.3f}) vs whole training {train_s:.2f} s ({op_s / train_s:.2e})"
    )

    # --- proof size --------------------------------------------------------------------------------
    leaves = honest.leaves()
    hashes = [leaf_hash(x) for x in leaves]
    proof = inclusion_proof(hashes, len(hashes) - 1)
    proof_bytes = 32 + len(encode_record(leaves[-1])) + len(encode_record(proof))
    ckpt = checkpoint_bytes(spec) * len(leaves)
    print(
        f"proof: root 32 B + one membership proof {proof_bytes - 32} B vs {len(leaves)} checkpoints "
        f"{ckpt / 1024:.0f} KiB ({proof_bytes / ckpt:.2e})"
    )

    # --- synthetic sweep: any cheat position, default sampling, and the game --------------------
    big = task(data, steps=1024, k=64)
    syn_honest = SyntheticRun(big)
    syn_caught = syn_total = 0
    syn_rounds_ok = True
    for i in range(args.synthetic):
        first_bad = (i * 2654435761) % big.steps
        cheat = SyntheticRun(big, Cheat(skip_from=first_bad))
        seg = first_bad // big.checkpoint_interval
        k = big.checkpoint_interval
        opened = DisputeOpen(
            bytes(32),
            bytes(32),
            seg,
            seg * k,
            k,
            state_hash_of(cheat.state_digests(seg * k)),
            state_hash_of(cheat.state_digests((seg + 1) * k)),
            state_hash_of(syn_honest.state_digests((seg + 1) * k)),
            b"A" * 32,
            b"B" * 32,
        )
        rep = play(big, opened, 0.0, HonestOracle(cheat), HonestOracle(syn_honest), synthetic_referee)
        syn_total += 1
        syn_caught += rep.outcome is Outcome.CHALLENGER_WINS
        syn_rounds_ok &= rep.rounds <= rep.bound
        rounds.append((rep.rounds, rep.bound))
    print(
        f"synthetic: {syn_caught}/{syn_total} skip-from-any-step cheats lose the game "
        f"(k={big.checkpoint_interval}, bound {rounds[-1][1]} rounds), all within bound: {syn_rounds_ok}"
    )
    worst = max(r / b for r, b in rounds)
    print(f"bisection rounds / bound: worst {worst:.2f}")

    print(
        json.dumps(
            {
                "verify_compute_fraction": round(step_fraction, 4),
                "verify_wall_fraction": round(verify_s / train_s, 4),
                "detection_rate": round(detection, 4),
                "false_positive_rate": round(fpr, 4),
                "threshold": thr,
                "arbitration_vs_step": round(op_s / step_s, 4),
                "arbitration_vs_training": float(f"{op_s / train_s:.3e}"),
                "rounds_vs_bound": round(worst, 3),
                "proof_vs_checkpoints": float(f"{proof_bytes / ckpt:.3e}"),
                "synthetic_pinpoint_catch_rate": round(syn_caught / syn_total, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
