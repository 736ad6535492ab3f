"""A character-level transformer through the market: the task, and what its run shows.

`MarketConfig(workload="lm", compute="torch")` submits one GPT-style byte model on the
built-in corpus (Python's own documentation, `pydoc_data.topics`) instead of the MLPs: it
is elected, trained by the solver's torch engine, proven, verified segment by segment,
and settled like any task. Once it settles, `lm_outcome` reads the final checkpoint from
the committed proof (every tensor checked against the root, as a submitter's
`polnet task result` does), measures held-out bits per byte against the split's unigram
entropy, samples text from those verified weights, and keeps the solver's per-step loss
and the committed checkpoints' validation loss for the loss-curve PNG.

Sizes: `small` (2 blocks, d_model 64, context 64, 512 steps) is what `polnet demo` runs in
a minute or two on a small box; `full` is the issue's model (4 blocks, d_model 128,
context 128) for the slow suite and `bench/workloads.py`-style measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netsim.scenarios.market.compute import MarketCompute, TorchTask
    from protocol.market.state import Task

#: (blocks, d_model, context, steps, checkpoint interval, lr) of each size. Every one has
#: 64 segments, the devnet's minimum (one verifier's check is 1/64 of the work).
LM_SIZES: dict[str, tuple[int, int, int, int, int, float]] = {
    "small": (2, 64, 64, 512, 8, 3e-3),
    "full": (4, 128, 128, 1024, 16, 2e-3),
}
#: Committed checkpoints evaluated on the held-out split for the curve (spread over the run).
CURVE_POINTS = 8
PROMPTS = ("def ", "The ")


def lm_task(size: str, salt: int) -> TorchTask:
    from netsim.scenarios.market.compute import TorchTask
    from node.compute import datasets, lm

    if size not in LM_SIZES:
        raise ValueError(f"lm size must be one of {', '.join(LM_SIZES)}, got {size!r}")
    blocks, width, context, steps, k, lr = LM_SIZES[size]
    data = datasets.corpus()
    spec = lm.char_transformer_spec(data, blocks=blocks, width=width, context=context, steps=steps,
                                    checkpoint_interval=k, lr=lr, heads=4, seed=1 + salt)
    return TorchTask(spec, data, "corpus")


@dataclass
class LmOutcome:
    task_id: str
    settled_valid: bool
    val_bits_per_byte: float | None = None
    unigram_bits_per_byte: float | None = None
    samples: dict[str, str] = field(default_factory=dict)
    train_curve: dict[int, float] = field(default_factory=dict)  # step -> bits per byte
    val_curve: dict[int, float] = field(default_factory=dict)  # committed checkpoint step -> bits/byte

    @property
    def below_unigram(self) -> float | None:
        if self.val_bits_per_byte is None or not self.unigram_bits_per_byte:
            return None
        return 1.0 - self.val_bits_per_byte / self.unigram_bits_per_byte


def lm_outcome(compute: MarketCompute, task: Task, submitter: bytes, sample_bytes: int = 240) -> LmOutcome:
    """What the submitter gets from a settled LM task: the verified weights' quality and text."""
    from node.compute import lm
    from node.compute.market_engine import TorchMarketCompute
    from protocol.market.jobs import facts_of

    out = LmOutcome(task.task_id.hex(), task.proof_valid is True and task.proof_root is not None)
    if not out.settled_valid or task.proof_root is None:
        return out
    tt = compute.torch_tasks[task.spec_hash]
    spec, data = tt.spec, tt.data
    reader = TorchMarketCompute(submitter, compute.shared_blobs())  # reads only what was committed
    final = reader.committed_state(facts_of(task), spec.num_checkpoints - 1)
    report = lm.evaluate(spec, data, final)
    out.val_bits_per_byte, out.unigram_bits_per_byte = report.val_bits_per_byte, report.unigram_bits_per_byte
    for i, prompt in enumerate(PROMPTS):
        out.samples[prompt] = lm.sample(spec, final, prompt, sample_bytes, seed=i)
    every = max(1, (spec.num_checkpoints - 1) // CURVE_POINTS)
    for i in range(0, spec.num_checkpoints, every):
        state = reader.committed_state(facts_of(task), i)
        out.val_curve[i * spec.checkpoint_interval] = lm.evaluate(spec, data, state).val_bits_per_byte
    out.val_curve[spec.steps] = report.val_bits_per_byte
    losses = compute.solver_losses(task.task_id)
    out.train_curve = {s: v / math.log(2) for s, v in sorted(losses.items())}
    return out


def write_curve(outcome: LmOutcome, path: Any) -> Any:
    from node.compute.plots import write_loss_curve

    return write_loss_curve(path, outcome.train_curve, outcome.val_curve,
                            title="character transformer, trained and verified through the market",
                            reference=outcome.unigram_bits_per_byte,
                            reference_label="unigram byte entropy (held-out split)")
