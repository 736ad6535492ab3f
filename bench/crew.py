"""Crew benchmark: one model trained by a 4-stage pipeline of processes, with AQ-SGD.

Run: .venv/bin/python bench/crew.py [--epochs E] [--jobs J] [--quick] [--verify-only | --schedule-only]

Every run is a real crew (node/compute/crew): 4 member processes, one torch thread each,
gloo over loopback, GPipe with 4 micro-batches of 8, a 4-block byte-level transformer
(d_model 64, context 64, 4 heads), the same seeds for every run. The task is a fine-tune,
AQ-SGD's setting (the paper's title: fine-tuning over slow networks): a base model is
pre-trained in fp32 (a one-member crew, 2 epochs of 4096 windows of the first 60% of the
built-in corpus), then each run fine-tunes it for --epochs epochs on 1024 windows of the
other 40% and is scored on that part's held-out tail. From scratch, where activations
change fastest, AQ-SGD does much worse (bench/RESULTS.md, "crew"). What
crosses the 3 stage boundaries forward is fp32, AQ-SGD deltas at 2/3/4 bits (first pass of
each sample in full), or activations quantized directly at 2 bits; backward, gradients
are quantized directly at 8 bits in every run but fp32's.

  aqsgd_loss_gap_{2,3,4}bit   final held-out loss (nats per byte) minus fp32's. Goal <= 0.01.
  direct_quant_loss_gap_2bit  the same for direct 2-bit activations. Goal >= 0.05 (so the
                              experiment can tell compression that works from one that does not).
  activation_bytes_vs_fp32    forward boundary bytes of the whole 2-bit AQ-SGD run over fp32's
                              (first epoch in full included). Goal <= 0.1. _steady: after the
                              first epoch alone.
  aqsgd_speedup_slow_links    median step time of fp32 over AQ-SGD 3-bit, every boundary an
                              emulated 100 Mbit/s link with 50 ms one-way delay (channels.py's
                              EmulatedLinks), the same model and base, 8 micro-batches of
                              16, 1024 windows, the median of the 8 steps after the first
                              epoch. Goal >= 2. Beside it,
                              aqsgd_link_time_speedup: the time the links add to a step (the
                              same runs minus runs without the emulated links), fp32 over
                              AQ-SGD: on this 2-core box 4 members share 2 cores, so compute
                              is about twice what a member with its own machine spends.

Verification (bench/crew_verify.py; --verify-only runs just this part): crews of a smaller
model commit their proofs, one member cheats (each catalog attack, and a boundary liar
towards a neighbour and towards a replica) or none does, and a verifier re-executes the
sampled segments of every member under several sampling seeds.

  crew_verify_compute_fraction  member-steps re-executed over member-steps trained.
                                Goal <= 0.05. Beside it, crew_verify_time_fraction: the
                                verifier's wall time over the members' summed step time.
  crew_detection_rate           cheating (run, seed) trials whose cheater is convicted.
                                Goal 1.
  crew_false_positive_rate      honest members convicted, over honest member-trials. Goal 0.

Placement (bench/crew_schedule.py; --schedule-only): 8 members, 4 stages x 2, over
emulated links from DT-FM's world-wide scenario scaled to the box, placed by the
scheduler or at random.

  scheduled_vs_random_iter_time  scheduled crew's iteration time over the random ones'. Goal < 1.

Loss runs are independent crews; --jobs J runs J of them at once (their losses do not
depend on timing: every run is bit-reproducible). The speedup runs go one at a time.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import crew_schedule  # bench/crew_schedule.py: the placement runs
import crew_verify  # bench/crew_verify.py: the verification runs

from node.compute import datasets
from node.compute.crew.channels import Link
from node.compute.crew.launch import run_local_crew
from node.compute.crew.model import ModelShape
from node.compute.crew.pipeline import CrewConfig, StageResult

GAP_GOAL, DIRECT_GOAL, BYTES_GOAL, SPEEDUP_GOAL = 0.01, 0.05, 0.1, 2.0
SLOW = Link(delay_s=0.050, bits_per_s=100e6)
#: name: (activation bits, direct?, gradient bits). grad8_only is the control: fp32
#: activations with the same 8-bit gradients, so the part of a gap due to the gradients shows.
RUNS: dict[str, tuple[int | None, bool, int | None]] = {
    "fp32": (None, False, None), "grad8_only": (None, False, 8), "aqsgd_2bit": (2, False, 8),
    "aqsgd_3bit": (3, False, 8), "aqsgd_4bit": (4, False, 8), "direct_2bit": (2, True, 8)}


def forward_bytes(results: list[StageResult]) -> int:
    """Activation bytes sent forward across the boundaries, by every member (backward
    gradients are counted apart; the last stage sends none forward)."""
    return sum(r.forward_bytes for r in results)


def loss_runs(base: CrewConfig, tokens: object, jobs: int) -> dict[str, list[StageResult]]:
    def one(name: str) -> tuple[str, list[StageResult]]:
        bits, direct, grad_bits = RUNS[name]
        t = time.perf_counter()
        res = run_local_crew(replace(base, bits=bits, direct=direct, grad_bits=grad_bits), tokens,
                             deadline_s=3600)
        print(f"  {name:12} val loss {res[-1].val_loss:.4f}  train loss {res[-1].losses[-1]:.4f}  "
              f"forward bytes {forward_bytes(res) / 1e6:8.2f} MB  {time.perf_counter() - t:6.1f} s",
              flush=True)
        return name, res

    with ThreadPoolExecutor(jobs) as pool:
        return dict(pool.map(one, RUNS))


def speed_run(cfg: CrewConfig, tokens: object, slow: bool = True) -> float:
    links = ({(a, b): SLOW for a in range(cfg.stages) for b in range(cfg.stages) if abs(a - b) == 1}
             if slow else None)
    res = run_local_crew(cfg, tokens, links=links, deadline_s=1800)
    timed = res[0].step_seconds[cfg.steps_per_epoch:]  # after the first epoch (AQ-SGD's full pass)
    return statistics.median(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a 2-epoch smoke run (numbers not comparable)")
    parser.add_argument("--verify-only", action="store_true", help="only the verification runs")
    parser.add_argument("--schedule-only", action="store_true", help="only the placement runs")
    args = parser.parse_args()
    if args.verify_only or args.schedule_only:
        part = crew_verify if args.verify_only else crew_schedule
        print(json.dumps(part.main_part(args.quick)))
        return
    corpus = datasets.corpus().tokens
    cut = len(corpus) * 3 // 5
    pre_tokens, tokens = corpus[:cut], corpus[cut:]
    epochs = 2 if args.quick else args.epochs
    shape = ModelShape(blocks=4, width=64, heads=4, context=64)
    # The base model: pre-trained in fp32 by a one-member crew on the first 60% of the corpus.
    pre = CrewConfig(stages=1, shape=shape, micro_batch=8, micro_batches=4, epochs=1 if args.quick else 2,
                     n_train=4096, n_val=128, lr=3e-3, seed=1)
    t = time.perf_counter()
    pretrained = run_local_crew(pre, pre_tokens, deadline_s=3600)[0]
    tmp = Path(tempfile.mkdtemp(prefix="polnet-crew-"))
    base_path = tmp / "base.safetensors"
    save_file(pretrained.state(), str(base_path))
    print(f"base model: {pre.epochs * pre.steps_per_epoch} fp32 steps on {pre.n_train} windows of the first "
          f"60% of the corpus, held-out loss {pretrained.val_loss:.4f} ({time.perf_counter() - t:.0f} s)")
    # The task: fine-tune it on the other 40% (its own held-out tail), by a 4-stage crew.
    base = CrewConfig(stages=4, shape=shape, micro_batch=8, micro_batches=4, epochs=epochs, n_train=1024,
                      n_val=256, lr=1e-3, seed=1, base=str(base_path))
    print(f"crew: {base.stages} stages, {base.shape}, {base.micro_batches} micro-batches of "
          f"{base.micro_batch}, {base.n_train} training windows, {epochs} epochs "
          f"({base.steps_per_epoch * epochs} steps)", flush=True)
    runs = loss_runs(base, tokens, args.jobs)
    fp32 = runs["fp32"][-1].val_loss
    assert fp32 is not None
    gaps = {name: runs[name][-1].val_loss - fp32 for name in RUNS if name != "fp32"}  # type: ignore[operator]
    full = forward_bytes(runs["fp32"])
    two = forward_bytes(runs["aqsgd_2bit"])
    steady = sum(r.forward_bytes_after_first_epoch for r in runs["aqsgd_2bit"]) / max(
        1, sum(r.forward_bytes_after_first_epoch for r in runs["fp32"]))

    speed = replace(base, micro_batch=16, micro_batches=8, n_train=1024, n_val=16, epochs=2)
    fp32_cfg, aq3_cfg = replace(speed, bits=None, grad_bits=None), replace(speed, bits=3)
    t_fp32, t_aq3 = speed_run(fp32_cfg, tokens), speed_run(aq3_cfg, tokens)
    c_fp32, c_aq3 = speed_run(fp32_cfg, tokens, slow=False), speed_run(aq3_cfg, tokens, slow=False)
    link_speedup = (t_fp32 - c_fp32) / max(1e-9, t_aq3 - c_aq3)
    print(f"slow links (100 Mbit/s, 50 ms): median step fp32 {t_fp32:.3f} s, AQ-SGD 3-bit {t_aq3:.3f} s "
          f"(speedup {t_fp32 / t_aq3:.2f}, goal >= {SPEEDUP_GOAL}); on loopback without the emulated links "
          f"{c_fp32:.3f} s and {c_aq3:.3f} s, so the links add {t_fp32 - c_fp32:.3f} s and "
          f"{t_aq3 - c_aq3:.3f} s a step ({link_speedup:.2f}x less); 4 members share 2 cores here, "
          "so compute is inflated")
    for name, gap in gaps.items():
        goal = (f">= {DIRECT_GOAL}" if name.startswith("direct") else
                "none: the control" if name == "grad8_only" else f"<= {GAP_GOAL}")
        print(f"{name:12} loss gap vs fp32 {gap:+.4f} nats (goal {goal})")
    print(f"activation bytes 2-bit / fp32: whole run {two / full:.4f} (goal <= {BYTES_GOAL}), "
          f"after the first epoch {steady:.4f}")
    verify = crew_verify.main_part(args.quick)
    placement = crew_schedule.main_part(args.quick)
    print(json.dumps({
        **verify,
        **placement,
        "aqsgd_loss_gap_2bit": round(gaps["aqsgd_2bit"], 4),
        "aqsgd_loss_gap_3bit": round(gaps["aqsgd_3bit"], 4),
        "aqsgd_loss_gap_4bit": round(gaps["aqsgd_4bit"], 4),
        "direct_quant_loss_gap_2bit": round(gaps["direct_2bit"], 4),
        "activation_bytes_vs_fp32": round(two / full, 4),
        "activation_bytes_vs_fp32_steady": round(steady, 4),
        "aqsgd_speedup_slow_links": round(t_fp32 / t_aq3, 3),
        "aqsgd_link_time_speedup": round(link_speedup, 3),
        "grad8_only_loss_gap": round(gaps["grad8_only"], 4),
        "fp32_val_loss": round(fp32, 4),
        "base_val_loss": round(float(pretrained.val_loss or 0.0), 4),
        "epochs": epochs,
    }))


if __name__ == "__main__":
    main()
