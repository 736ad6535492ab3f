"""Loss-curve PNGs (matplotlib, Agg: no display needed, safe in worker threads)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def write_loss_curve(
    path: Path,
    train: Mapping[int, float],
    val: Mapping[int, float] | None = None,
    *,
    title: str = "training loss",
    unit: str = "bits per byte",
    reference: float | None = None,
    reference_label: str = "unigram entropy",
) -> Path:
    """Plot per-step training loss (and validation points, and a reference line) to `path`.

    Losses are given in the unit named (callers convert nats to bits per byte for text).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        if train:
            steps = sorted(train)
            ax.plot(steps, [train[s] for s in steps], lw=0.8, alpha=0.8, label="train")
        if val:
            steps = sorted(val)
            ax.plot(steps, [val[s] for s in steps], "o-", ms=3, label="validation")
        if reference is not None:
            ax.axhline(reference, ls="--", c="grey", lw=1, label=reference_label)
        ax.set_xlabel("step")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
