"""Loss and accuracy of a model state on a dataset split (dropout off).

Samples: every sample of the split in one batch. Text: non-overlapping windows of the
split (at most MAX_EVAL_WINDOWS, so an evaluation is bounded whatever the corpus), each
position predicting the next byte; the loss in bits per byte is what compression and
language-modelling papers report, and comparable to the corpus's unigram entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from node.compute.datasets import AnyDataset, TextDataset
from node.compute.ops import dtype_of, loss_value, model_forward
from protocol.pol.spec import TaskSpec

if TYPE_CHECKING:
    from node.compute.trainer import State

#: Windows (contexts) a text evaluation reads at most, and per forward pass.
MAX_EVAL_WINDOWS = 512
EVAL_BATCH = 32
#: Samples per forward pass for sample datasets.
EVAL_SAMPLES_BATCH = 4096


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean loss in nats (the spec's loss)
    accuracy: float
    count: int  # samples, or predicted tokens for text
    split: str

    @property
    def bits_per_byte(self) -> float:
        return self.loss / math.log(2)


SPLITS = ("train", "val")


def evaluate(spec: TaskSpec, data: AnyDataset, state: State, split: str | None = None) -> Evaluation:
    """Evaluate on `split` ("train" or "val"; default: val if the spec holds one out).

    A version-1 spec of sample data evaluates on all of it (that is what `accuracy`
    always meant for it).
    """
    which = split or ("val" if spec.val_size else "train")
    if which not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    with torch.no_grad():
        params = state.params
        if isinstance(data, TextDataset):
            return _text(spec, data, params, which)
        x, y = data.x, data.y
        if spec.version >= 2 and spec.val_size:
            cut = spec.train_size
            x, y = (x[:cut], y[:cut]) if which == "train" else (x[cut:], y[cut:])
        total_loss, correct = 0.0, 0
        for i in range(0, len(y), EVAL_SAMPLES_BATCH):
            xb, yb = x[i : i + EVAL_SAMPLES_BATCH].to(dtype_of(spec)), y[i : i + EVAL_SAMPLES_BATCH]
            out = model_forward(spec, params, xb.to(params[0].device)).cpu()
            total_loss += float(loss_value(spec, out, yb)) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
        n = max(1, len(y))
        return Evaluation(total_loss / n, correct / n, len(y), which)


def _text(spec: TaskSpec, data: TextDataset, params: list[torch.Tensor], which: str) -> Evaluation:
    tokens = data.split(spec, which)
    t = spec.input_shape[0]
    starts = list(range(0, len(tokens) - t, t))[:MAX_EVAL_WINDOWS]
    total, correct, count = 0.0, 0, 0
    for i in range(0, len(starts), EVAL_BATCH):
        s = torch.tensor(starts[i : i + EVAL_BATCH])
        chunk = tokens[s[:, None] + torch.arange(t + 1)].long()
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits = model_forward(spec, params, x.to(params[0].device)).cpu()
        total += float(loss_value(spec, logits, y)) * y.numel()
        correct += int((logits.argmax(-1) == y).sum())
        count += y.numel()
    n = max(1, count)
    return Evaluation(total / n, correct / n, count, which)
