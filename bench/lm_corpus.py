"""Train the ready-made character transformer on the built-in corpus, directly.

Run: .venv/bin/python bench/lm_corpus.py [--steps N] [--threads T] [--png PATH]

The model the issue asks for (4 blocks, d_model 128, context 128, 4 heads, tied
embeddings, byte vocabulary) trained by our trainer (fast path, checkpoints and digests
every k steps, Merkle root at the end) on Python's own documentation, 10% held out.
Prints the held-out loss in bits per byte next to the unigram byte entropy of the
corpus and of the held-out split, the steps and wall time it took, and tokens per
second. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from node.compute import datasets, lm
from node.compute.plots import write_loss_curve
from node.compute.trainer import Run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--interval", type=int, default=32, help="checkpoint interval k")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=160)
    ap.add_argument("--png", type=Path, default=None, help="write the loss curve here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = datasets.corpus()
    spec = lm.char_transformer_spec(
        data, steps=args.steps, checkpoint_interval=args.interval, lr=args.lr, threads=args.threads
    )
    uni_all = datasets.unigram_bits_per_byte(data.tokens)
    print(
        f"corpus: {len(data)} bytes ({datasets.CORPUS_NAME}), unigram entropy {uni_all:.3f} bits/byte; "
        f"{spec.val_size} held out; model 4x128, context 128, batch {spec.batch_size}, "
        f"{spec.steps} steps, k={spec.checkpoint_interval}, lr {args.lr}, {args.threads} thread(s)",
        flush=True,
    )
    run = Run(spec, data)
    val: dict[int, float] = {}
    t0 = time.perf_counter()
    train_s = 0.0
    report = lm.evaluate(spec, data, run.state_at(0))
    val[0] = report.val_bits_per_byte
    for i in range(1, spec.num_checkpoints):
        t = time.perf_counter()
        run.states[i * spec.checkpoint_interval] = run.state_at(i * spec.checkpoint_interval)
        run.states[i * spec.checkpoint_interval].leaf(i * spec.checkpoint_interval, spec.data_seed)
        train_s += time.perf_counter() - t
        step = i * spec.checkpoint_interval
        if step % args.eval_every == 0 or i == spec.num_checkpoints - 1:
            report = lm.evaluate(spec, data, run.state_at(step))
            val[step] = report.val_bits_per_byte
            recent = [run.losses[s] for s in range(step - spec.checkpoint_interval, step)]
            print(
                f"step {step:5d}: train {sum(recent) / len(recent) / math.log(2):.3f} bits/byte, "
                f"val {report.val_bits_per_byte:.3f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    t = time.perf_counter()
    root = run.root()
    train_s += time.perf_counter() - t
    final = lm.evaluate(spec, data, run.state_at(spec.steps))
    tokens = spec.steps * spec.batch_size * spec.input_shape[0]
    print(
        f"final: val {final.val_bits_per_byte:.3f} bits/byte vs unigram {uni_all:.3f} (corpus) / "
        f"{final.unigram_bits_per_byte:.3f} (held-out split): {final.below_unigram:.1%} below the split's "
        f"(goal >= 40%), {1 - final.val_bits_per_byte / uni_all:.1%} below the corpus's; "
        f"{spec.steps} steps in {train_s:.0f} s of training ({tokens / train_s:.0f} tokens/s); "
        f"root {root.hex()[:16]}"
    )
    print(f"sample: {lm.sample(spec, run.state_at(spec.steps), 'The ', 160, seed=1)!r}")
    if args.png is not None:
        curve = {s: v / math.log(2) for s, v in run.losses.items()}
        write_loss_curve(
            args.png, curve, val, title="4x128 char transformer, pydoc corpus", reference=uni_all
        )
    print(
        json.dumps(
            {
                "lm_val_bits_per_byte": round(final.val_bits_per_byte, 4),
                "unigram_bits_per_byte": round(uni_all, 4),
                "val_split_unigram_bits_per_byte": round(final.unigram_bits_per_byte, 4),
                "below_unigram": round(min(final.below_unigram, 1 - final.val_bits_per_byte / uni_all), 4),
                "steps": spec.steps,
                "train_seconds": round(train_s, 1),
                "lm_tokens_per_s": round(tokens / train_s),
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
