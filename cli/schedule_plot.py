"""`polnet schedule --plot`: the devices, the stage each one got, and the heaviest links.

Left: the network, devices placed by classical multidimensional scaling of their
transfer times (clusters of fast links land together), coloured by stage, labelled
with their rank; the heaviest pipeline transfers of the assignment (the slowest pair
at each stage boundary first) drawn over it, thicker for slower, and the slowest
data-parallel group's worst links dashed. Right: the stage x rank grid with each
cell's device, and every boundary's cost. Rendered with matplotlib's Agg backend
(no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from protocol.errors import ConfigError
from protocol.schedule.cost import build_problem, cost_parts, grid_of
from protocol.schedule.model import Assignment, Device, Links, Workload

#: Pipeline transfers drawn (the slowest of each boundary always, then by time).
HEAVIEST_LINKS = 16


def positions(seconds: np.ndarray) -> np.ndarray:
    """2-D classical MDS of a symmetric time matrix (log-scaled), jittered so that
    devices with identical links do not sit on one point."""
    n = seconds.shape[0]
    if n == 1:
        return np.zeros((1, 2))
    dist = np.log1p(
        seconds / max(float(np.median(seconds[seconds > 0])) if (seconds > 0).any() else 1.0, 1e-12)
    )
    np.fill_diagonal(dist, 0.0)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (dist**2) @ j
    vals, vecs = np.linalg.eigh(b)
    top = np.argsort(vals)[::-1][:2]
    xy = vecs[:, top] * np.sqrt(np.maximum(vals[top], 0.0))
    spread = float(np.ptp(xy)) or 1.0
    angle = np.arange(n) * 2.399963  # golden angle: evenly spread, deterministic
    radius = 0.04 * spread * np.sqrt((np.arange(n) % 8 + 1) / 8)
    out: np.ndarray = xy + np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return out


def draw(
    path: Path,
    result: Assignment,
    links: Links,
    devices: Sequence[Device],
    workload: Workload,
    modelled: bool,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = result.shape
    problem = build_problem(devices, links, workload, shape, compute=modelled, memory=modelled)
    grid = grid_of(result.placement, shape)
    parts = cost_parts(problem, grid[None])
    s, d = shape.stages, shape.dp_degree
    fwd = problem.fwd.astype(np.float64) / 1e9
    xy = positions((fwd + fwd.T) / 2)
    cmap = plt.get_cmap("viridis", max(s, 2))

    fig, (ax, axg) = plt.subplots(1, 2, figsize=(15, 6.5), gridspec_kw={"width_ratios": [3, 2]})
    # The heaviest pipeline transfers: (time, u, v, boundary).
    edges: list[tuple[float, int, int, int, bool]] = []
    for k in range(s - 1):
        times = parts.forward[0, k] + parts.backward[0, k]
        worst = int(np.argmax(times))
        for r in range(d):
            edges.append((float(times[r]) / 1e9, int(grid[k, r]), int(grid[k + 1, r]), k, r == worst))
    edges.sort(key=lambda e: (not e[4], -e[0]))
    shown = edges[: max(HEAVIEST_LINKS, s - 1)]
    top = max((e[0] for e in shown), default=1.0) or 1.0
    for t, u, v, _, critical in shown:
        ax.plot(
            [xy[u, 0], xy[v, 0]],
            [xy[u, 1], xy[v, 1]],
            color="crimson" if critical else "salmon",
            lw=0.8 + 4.0 * t / top,
            alpha=0.85,
            zorder=1,
        )
    # The slowest data-parallel group's worst links.
    rows = parts.rows[0]
    k_dp = int(np.argmax(rows.max(axis=1)))
    group = grid[k_dp]
    w = problem.dp_weight[problem.stage_class[k_dp]]
    pairs = sorted(
        ((int(w[a, b]), int(a), int(b)) for i, a in enumerate(group) for b in group[i + 1 :]), reverse=True
    )
    for _, a, b in pairs[: min(len(pairs), d)]:
        ax.plot(
            [xy[a, 0], xy[b, 0]],
            [xy[a, 1], xy[b, 1]],
            color="darkorange",
            ls="--",
            lw=1.0,
            alpha=0.8,
            zorder=1,
        )
    for k in range(s):
        for r in range(d):
            dev = int(grid[k, r])
            ax.scatter(xy[dev, 0], xy[dev, 1], s=140, color=cmap(k), edgecolor="black", lw=0.5, zorder=2)
            ax.annotate(str(r), xy[dev], ha="center", va="center", fontsize=6, color="white", zorder=3)
    for k in range(s):
        ax.scatter([], [], color=cmap(k), label=f"stage {k}")
    ax.legend(loc="best", fontsize=7, ncol=2, title="colour: stage, label: rank", title_fontsize=7)
    ax.set_title(
        "devices by link distance; red: slowest pipeline transfers, orange: slowest DP group", fontsize=9
    )
    ax.set_xticks([])
    ax.set_yticks([])

    axg.imshow(np.arange(s)[:, None].repeat(d, axis=1), cmap=cmap, aspect="auto", alpha=0.6)
    for k in range(s):
        for r in range(d):
            axg.text(r, k, str(int(grid[k, r])), ha="center", va="center", fontsize=7)
    for k in range(s - 1):
        b = (parts.forward[0, k].max() + parts.backward[0, k].max()) / 1e9
        axg.text(d - 0.4, k + 0.5, f"{b:.2f}s", fontsize=7, va="center")
    axg.set_xlabel("dp rank")
    axg.set_ylabel("stage")
    c = result.cost
    axg.set_title(
        f"{s}x{d}: {c.seconds:.2f} s/iter = DP {c.dp_ns / 1e9:.2f}"
        f" + PP {(c.pp_forward_ns + c.pp_backward_ns) / 1e9:.2f}"
        f" + compute {c.compute_ns / 1e9:.2f}  ({result.method})",
        fontsize=9,
    )
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the plot: {exc.strerror}") from None
    finally:
        plt.close(fig)
