"""Cross-checks of a crew's transcripts: what each member says it sent against what its
neighbour says it received, and each stage's all-reduce results against each other.

Every member hashes every boundary message it sends and receives, in order, per
neighbour, and each step's all-reduce (its contribution and the result it applied). An
honest crew's transcripts agree pairwise: member a's list of hashes sent to b equals b's
list of hashes received from a, and the replicas of a stage applied the same reduced
gradient at every step. A member that sends one tensor but commits the hash of another
(a "boundary liar"), or that applies a gradient other than the all-reduce's result, shows
up as the first index where two lists part. Which side of a mismatched pair lied is then
settled by the message itself, signed by its sender (the crew's proofs, not built yet:
docs/parallel.md); this module only finds where to look.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.compute.crew.pipeline import CrewConfig, StageResult


@dataclass(frozen=True)
class Mismatch:
    """Two members' transcripts part at `index`: for "boundary", the index-th message from
    `members[0]` to `members[1]`; for "all-reduce", the index-th step, between replicas."""

    kind: str
    members: tuple[int, int]
    index: int


def _first_difference(a: list[bytes], b: list[bytes]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def cross_check(cfg: CrewConfig, results: list[StageResult]) -> list[Mismatch]:
    """Every disagreement between neighbours' boundary records and between replicas'
    all-reduce results, in rank order. Empty for an honest crew."""
    if len(results) != cfg.world or [r.rank for r in results] != list(range(cfg.world)):
        raise ValueError(f"need one result per member, by rank (world {cfg.world})")
    found: list[Mismatch] = []
    for stage in range(cfg.stages - 1):
        for replica in range(cfg.data_parallel):
            a, b = cfg.rank(stage, replica), cfg.rank(stage + 1, replica)
            for src, dst in ((a, b), (b, a)):  # activations forward, gradients back
                i = _first_difference(results[src].sent.get(dst, []), results[dst].received.get(src, []))
                if i is not None:
                    found.append(Mismatch("boundary", (src, dst), i))
    for stage in range(cfg.stages):
        first = results[cfg.rank(stage, 0)]
        for replica in range(1, cfg.data_parallel):
            other = results[cfg.rank(stage, replica)]
            i = _first_difference([res for _, res in first.reduced], [res for _, res in other.reduced])
            if i is not None:
                found.append(Mismatch("all-reduce", (first.rank, other.rank), i))
    return found
