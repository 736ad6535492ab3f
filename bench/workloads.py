"""Real-workload benchmark: an MLP, a CNN and a transformer LM through our trainer.

Run: .venv/bin/python bench/workloads.py [--rounds R] [--seeds N]

Side by side in one run, one thread, same specs:
  solver overhead: our trainer (fast path, checkpoints every k steps, tensor digests,
    Merkle root) / a bare torch loop of the same model (plain functional torch, one
    backward, torch.optim), both drawing the spec's batches; CPU time of the process
    (one thread), best of R interleaved rounds, the wall-time ratio next to it;
  on the LM (2 blocks, d_model 64, context 64, byte corpus): verification compute /
    training compute at default sampling; detection and false positives over the whole
    attack catalog and N sampling seeds; referee compute of the op each dispute
    pinpoints / one training step (and the slowest op of a step / one step); tokens per
    second; held-out loss in bits per byte (the issue's 4x128 model: bench/lm_corpus.py).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from node.compute import attacks, datasets, lm
from node.compute.datasets import AnyDataset
from node.compute.dispute import challenger_run, dispute_segment
from node.compute.ops import batch, execute, gather
from node.compute.profiling import profile
from node.compute.tensors import TensorStore
from node.compute.trace import TorchSource, referee
from node.compute.trainer import Run, State, accuracy, initial_state, run_step
from node.compute.verify import verify_proof
from protocol.pol.jobs import RefereeJob
from protocol.pol.messages import OpOutputs
from protocol.pol.ops import START, OpKind, step_ops
from protocol.pol.sampling import op_tolerance, sample_count
from protocol.pol.spec import (
    SPEC_VERSION,
    LayerKind,
    LossKind,
    OptimizerKind,
    OptimizerSpec,
    ReproProfile,
    TaskSpec,
    conv2d,
    flatten,
    linear,
    maxpool2d,
    relu,
)

Timed = tuple[Any, float]


def timed(fn: Callable[[], Any]) -> Timed:
    """(result, CPU seconds of this one-thread process): on a shared machine wall time
    also counts other people's work."""
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def interleaved(a: Callable[[], Any], b: Callable[[], Any], reps: int = 9) -> tuple[float, float]:
    """Median CPU seconds of a and of b, timed alternately (so load drifts hit both)."""
    ta, tb = [], []
    for _ in range(reps):
        ta.append(timed(a)[1])
        tb.append(timed(b)[1])
    return statistics.median(ta), statistics.median(tb)


# --- the three workloads -----------------------------------------------------------------------


def mlp_spec(data: datasets.Dataset, steps: int, k: int) -> TaskSpec:
    layers = (linear(64, 256), relu(), linear(256, 256), relu(), linear(256, 10))
    return TaskSpec(
        SPEC_VERSION,
        (64,),
        10,
        layers,
        LossKind.CROSS_ENTROPY,
        OptimizerSpec(OptimizerKind.ADAM, 1e-3),
        128,
        steps,
        k,
        data.digest,
        len(data),
        1,
        2,
        3,
        ReproProfile(),
        val_size=197,
    )


def cnn_spec(data: datasets.Dataset, steps: int, k: int) -> TaskSpec:
    layers = (
        conv2d(1, 16, 3, padding=1),
        relu(),
        maxpool2d(2),
        conv2d(16, 32, 3, padding=1),
        relu(),
        maxpool2d(2),
        flatten(),
        linear(128, 10),
    )
    return TaskSpec(
        SPEC_VERSION,
        (1, 8, 8),
        10,
        layers,
        LossKind.CROSS_ENTROPY,
        OptimizerSpec(OptimizerKind.ADAM, 3e-3),
        64,
        steps,
        k,
        data.digest,
        len(data),
        1,
        2,
        3,
        ReproProfile(),
        val_size=197,
    )


def lm_spec(data: datasets.TextDataset, steps: int, k: int) -> TaskSpec:
    return lm.char_transformer_spec(
        data,
        blocks=2,
        width=64,
        context=64,
        heads=4,
        batch_size=16,
        steps=steps,
        checkpoint_interval=k,
        lr=3e-3,
    )


# --- a bare torch loop of the same spec ----------------------------------------------------------


def plain_forward(spec: TaskSpec, ps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The spec's model in plain functional torch (no op structure, views where torch allows)."""
    it = iter(ps)
    emb = None
    for layer in spec.layers:
        kind = layer.kind
        if kind is LayerKind.LINEAR:
            x = F.linear(x, next(it), next(it))
        elif kind is LayerKind.RELU:
            x = F.relu(x)
        elif kind is LayerKind.CONV2D:
            x = F.conv2d(x, next(it), next(it), stride=layer.stride, padding=layer.padding)
        elif kind is LayerKind.MAXPOOL2D:
            x = F.max_pool2d(x, layer.kernel, layer.stride, layer.padding)
        elif kind is LayerKind.FLATTEN:
            x = x.flatten(1)
        elif kind is LayerKind.LAYERNORM:
            x = F.layer_norm(x, (layer.in_size,), next(it), next(it))
        elif kind is LayerKind.EMBEDDING:
            emb = next(it)
            x = F.embedding(x, emb)
        elif kind is LayerKind.POS_EMBEDDING:
            x = x + next(it)[: x.shape[1]]
        elif kind is LayerKind.TRANSFORMER_BLOCK:
            x = _plain_block(x, layer.heads, [next(it) for _ in range(12)])
        elif kind is LayerKind.LM_HEAD_TIED:
            assert emb is not None
            x = F.linear(x, emb)
        else:
            raise AssertionError(f"no plain version of {kind.name}")
    return x


def _plain_block(x: torch.Tensor, h: int, p: list[torch.Tensor]) -> torch.Tensor:
    b, t, d = x.shape
    a = F.layer_norm(x, (d,), p[0], p[1])
    q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in F.linear(a, p[2], p[3]).split(d, -1))
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // h))
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    x = x + F.linear((s @ v).transpose(1, 2).reshape(b, t, d), p[4], p[5])
    m = F.linear(F.gelu(F.linear(F.layer_norm(x, (d,), p[6], p[7]), p[8], p[9])), p[10], p[11])
    return x + m


def plain_train(spec: TaskSpec, data: AnyDataset) -> float:
    """A bare loop: leaf tensors, one loss.backward(), torch.optim; returns the last loss."""
    ps = [p.clone().requires_grad_(True) for p in initial_state(spec).params]
    o = spec.optimizer
    opt: torch.optim.Optimizer
    if o.kind is OptimizerKind.ADAMW:
        opt = torch.optim.AdamW(ps, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.Adam(ps, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    loss = torch.zeros(())
    for step in range(spec.steps):
        x, y = batch(spec, data, step)
        z = plain_forward(spec, ps, x)
        loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def solver_train(spec: TaskSpec, data: AnyDataset) -> Run:
    """Our solver: train with checkpoints every k steps, digest every checkpoint, root."""
    run = Run(spec, data)
    run.train()
    run.root()
    return run


def cpu_timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, CPU seconds of this process, wall seconds)."""
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - t


@dataclass
class Overhead:
    ratio: float  # CPU time, ours / plain (best of the rounds each)
    wall_ratio: float
    ours_s: float
    plain_s: float
    run: Run


def overhead(spec: TaskSpec, data: AnyDataset, rounds: int) -> Overhead:
    """Our solver vs the plain loop, rounds interleaved after one untimed warm-up of each
    (first calls pay for torch's lazy initialisation). On a shared machine the CPU time
    of this (one-thread) process is the cost; wall time also counts other people's work."""
    short = replace(spec, steps=spec.checkpoint_interval)
    solver_train(short, data)
    plain_train(short, data)
    ours, plain, ours_w, plain_w, run = [], [], [], [], None
    for _ in range(rounds):
        run, c, w = cpu_timed(lambda: solver_train(spec, data))
        ours.append(c)
        ours_w.append(w)
        _, c, w = cpu_timed(lambda: plain_train(spec, data))
        plain.append(c)
        plain_w.append(w)
    assert run is not None
    return Overhead(min(ours) / min(plain), min(ours_w) / min(plain_w), min(ours), min(plain), run)


# --- arbitration cost on the LM ---------------------------------------------------------------------


def referee_vs_step(spec: TaskSpec, data: AnyDataset, honest: Run, step: int, j: int) -> tuple[float, float]:
    """(CPU seconds of the referee's work on op j of `step`: fetch and re-hash the inputs,
    re-execute, hash the outputs; CPU seconds of one training step), interleaved."""
    store = TensorStore()
    src = TorchSource(honest, store)
    trace = src.step_trace(step)
    w, o = src.state_digests(step)
    start = (*w, *o)
    op = step_ops(spec)[j]
    inputs = tuple(start[r.slot] if r.op == START else trace[r.op][r.slot] for r in op.inputs)
    job = RefereeJob(b"\x00" * 32, spec, step, j, inputs, OpOutputs(trace[j]), OpOutputs(trace[j]), 0.0)
    state = honest.state_at(step)
    return interleaved(lambda: referee(job, data, store), lambda: run_step(spec, data, state, step))


def slowest_op_vs_step(spec: TaskSpec, data: AnyDataset, run: Run, step: int) -> tuple[float, float, str]:
    """(CPU seconds of the costliest op of the step re-executed alone, of the step, its name)."""
    state = run.state_at(step)
    outs: list[Any] = []
    run_step(spec, data, state, step, lambda j, t, o: outs.append(o))
    start = [*state.params, *state.opt]
    costs = []
    for op in step_ops(spec)[:-1]:
        ins = gather(op, start, outs)
        t = statistics.median(
            timed(lambda op=op, ins=ins: execute(spec, data, op, step, ins))[1] for _ in range(5)
        )
        costs.append((t, op))
    _, worst = max(costs, key=lambda c: c[0])
    ins = gather(worst, start, outs)
    op_s, step_s = interleaved(
        lambda: execute(spec, data, worst, step, ins), lambda: run_step(spec, data, state, step)
    )
    return op_s, step_s, f"{worst.kind.name} {worst.index}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per workload")
    ap.add_argument("--seeds", type=int, default=10, help="sampling seeds per attack")
    ap.add_argument("--steps", type=int, default=128, help="training steps per workload")
    args = ap.parse_args()
    torch.set_num_threads(1)
    digits, images, corpus = datasets.digits(), datasets.digit_images(), datasets.corpus()
    steps = args.steps
    specs = {
        # an MLP step is short (~2 ms): k = 8 keeps the 64 segments the chain asks for
        "mlp": (mlp_spec(digits, 4 * steps, 8), digits),
        "cnn": (cnn_spec(images, steps, 2), images),
        "transformer": (lm_spec(corpus, steps, 2), corpus),
    }
    result: dict[str, Any] = {}
    runs: dict[str, Run] = {}
    seconds: dict[str, float] = {}
    for name, (spec, data) in specs.items():
        ov = overhead(spec, data, args.rounds)
        runs[name], seconds[name] = ov.run, ov.ours_s
        hashing = cpu_timed(lambda r=ov.run: [State(s.params, s.opt).digests() for s in r.checkpoints()])[1]
        result[f"solver_overhead_{name}"] = round(ov.ratio, 4)
        result[f"solver_overhead_{name}_wall"] = round(ov.wall_ratio, 4)
        print(
            f"{name:12s} {spec.steps} steps, k={spec.checkpoint_interval}: ours {ov.ours_s:.2f} CPU-s "
            f"(checkpoints, digests, root) vs plain torch {ov.plain_s:.2f} CPU-s -> {ov.ratio:.3f} "
            f"(wall-time ratio {ov.wall_ratio:.3f}); digesting the {spec.num_checkpoints} checkpoints alone: "
            f"{hashing:.3f} CPU-s = {hashing / ov.plain_s:.1%} of the plain loop",
            flush=True,
        )
    spec, data = specs["transformer"]
    honest = runs["transformer"]
    tokens = spec.steps * spec.batch_size * spec.input_shape[0]
    lm_tokens_per_s = tokens / seconds["transformer"]
    report = lm.evaluate(spec, corpus, honest.state_at(spec.steps))
    print(
        f"lm: {tokens / spec.steps:.0f} tokens/step, {lm_tokens_per_s:.0f} tokens per CPU-second; held-out "
        f"{report.val_bits_per_byte:.3f} bits/byte after {spec.steps} steps "
        f"(unigram {report.unigram_bits_per_byte:.3f})"
    )
    mlp_acc = accuracy(specs["mlp"][0], digits, runs["mlp"].state_at(4 * steps))
    cnn_acc = accuracy(specs["cnn"][0], images, runs["cnn"].state_at(steps))
    print(f"held-out accuracy: mlp {mlp_acc:.3f}, cnn {cnn_acc:.3f}")

    # --- verification and the attack catalog on the LM ----------------------------------------------
    thr = profile(spec, data, spec.checkpoint_interval, (2,)).threshold
    print(f"lm profile: threshold {thr:.2e} (1 vs 2 threads), op tolerance {op_tolerance(thr):.0e}")
    fetch = lambda i: honest.state_at(i * spec.checkpoint_interval)  # noqa: E731
    verdict = verify_proof(spec, data, honest.leaves(), fetch, b"\x01" * 32, thr)
    verify_fraction = verdict.steps_executed / spec.steps
    print(
        f"lm verify: {verdict.steps_executed} of {spec.steps} steps = {verify_fraction:.2%} of training "
        f"(default sample {sample_count(spec.num_segments)} of {spec.num_segments} segments)"
    )
    caught = total = false_pos = honest_checks = 0
    pinpointed: list[tuple[str, int, int]] = []  # (attack, step, op)
    for attack in attacks.CATALOG:
        run = attack.build(spec, data, 0)
        f = lambda i, r=run: r.state_at(i * spec.checkpoint_interval)  # noqa: E731
        flagged = sum(
            not verify_proof(spec, data, run.leaves(), f, bytes([s]) * 32, thr).passed
            for s in range(args.seeds)
        )
        line = f"  {attack.name:20s} flagged {flagged}/{args.seeds}"
        if attack.honest:
            false_pos += flagged
            honest_checks += args.seeds
        else:
            caught += flagged
            total += args.seeds
            last = spec.num_segments - 1
            verifier = challenger_run(spec, data, run, last)
            if verifier.state_at(spec.steps).leaf(0, 0) != run.state_at(spec.steps).leaf(0, 0):
                rep = dispute_segment(spec, data, run, verifier, last, op_tolerance(thr))
                op = step_ops(spec)[rep.op_index]
                pinpointed.append((attack.name, rep.step, rep.op_index))
                line += (
                    f"; pinpoint {rep.outcome.name} at step {rep.step} op {rep.op_index} ({op.kind.name} "
                    f"{op.index}) in {rep.rounds}/{rep.bound} rounds"
                )
        print(line, flush=True)
    false_pos += sum(
        not verify_proof(spec, data, honest.leaves(), fetch, bytes([s]) * 32, thr).passed
        for s in range(args.seeds)
    )
    honest_checks += args.seeds
    detection, fpr = caught / total, false_pos / honest_checks
    print(f"lm detection {detection:.3f} over {total} checks; false positives {false_pos}/{honest_checks}")

    # --- arbitration: the pinpointed op vs one training step ------------------------------------------
    ratios = []
    for name, step, j in pinpointed:
        ref_s, st_s = referee_vs_step(spec, data, honest, step, j)
        ratios.append(ref_s / st_s)
        print(
            f"  {name:20s} referee {ref_s * 1e3:.2f} ms for op {j} ({step_ops(spec)[j].kind.name}) vs step "
            f"{st_s * 1e3:.1f} ms (CPU) -> {ref_s / st_s:.3f}"
        )
    slow_s, st_s, slow_name = slowest_op_vs_step(spec, data, honest, spec.steps - 1)
    print(
        f"slowest single op of a step ({slow_name}) re-executed alone: {slow_s * 1e3:.2f} ms vs the step "
        f"{st_s * 1e3:.1f} ms (CPU) -> {slow_s / st_s:.3f}"
    )
    kinds = {step_ops(spec)[j].kind for _, _, j in pinpointed}
    print(f"pinpointed op kinds: {sorted(k.name for k in kinds)}; ops per step {len(step_ops(spec))}")

    overheads = [result[f"solver_overhead_{n}"] for n in specs]  # CPU-time ratios
    out = {
        "solver_overhead_vs_plain_torch": max(overheads),
        **result,
        "lm_verify_compute_fraction": round(verify_fraction, 4),
        "lm_detection_rate": round(detection, 4),
        "lm_false_positive_rate": round(fpr, 4),
        "lm_arbitration_vs_step": round(max(ratios), 4),
        "lm_slowest_op_vs_step": round(slow_s / st_s, 4),
        "lm_tokens_per_s": round(lm_tokens_per_s),
        "lm_val_bits_per_byte": round(report.val_bits_per_byte, 4),
        "lm_threshold": thr,
        "pinpointed_update_ops": sum(k is OpKind.UPDATE for k in kinds),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
