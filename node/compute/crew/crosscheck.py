"""Cross-checks of a crew's transcripts: what each member says it sent against what its
neighbour says it received, and each stage's all-reduce results against each other.

Every member hashes every boundary message it sends and receives, in order, per
neighbour, and each step's all-reduce (its contribution and the result it applied). An
honest crew's transcripts agree pairwise: member a's list of hashes sent to b equals b's
list of hashes received from a, and the replicas of a stage applied the same reduced
gradient at every step. A member that sends one tensor but commits the hash of another
(a "boundary liar"), or that applies a gradient other than the all-reduce's result, shows
up as the first index where two lists part. Which side of a mismatched boundary pair
lied is then settled by the message's signature (`blame`): every message is signed by its
sender over its hash (channels.SignedChannel), and the receiver keeps the signatures. A
valid signature on the receiver's record convicts the sender, who signed one thing and
committed another; a receiver that cannot show one fabricated its record.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.compute.crew.channels import boundary_statement
from node.compute.crew.pipeline import CrewConfig, StageResult
from protocol.identity import verify


@dataclass(frozen=True)
class Mismatch:
    """Two members' transcripts part at `index`: for "boundary", the index-th message from
    `members[0]` to `members[1]`, pipeline neighbours; for "contribution", the same
    between two replicas of a stage (their gradient exchange, one per step); for
    "all-reduce", the reduced gradient the two replicas applied at step `index`."""

    kind: str
    members: tuple[int, int]
    index: int


def first_difference(a: list[bytes], b: list[bytes]) -> int | None:
    """The first index where two hash lists part (the shorter one's length if one is a
    prefix of the other), or None when they are equal."""
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
                i = first_difference(results[src].sent.get(dst, []), results[dst].received.get(src, []))
                if i is not None:
                    found.append(Mismatch("boundary", (src, dst), i))
    for stage in range(cfg.stages):  # the replicas' signed gradient exchange
        for d in range(cfg.data_parallel):
            for e in range(cfg.data_parallel):
                src, dst = cfg.rank(stage, d), cfg.rank(stage, e)
                i = None if d == e else first_difference(results[src].sent.get(dst, []),
                                                          results[dst].received.get(src, []))
                if i is not None:
                    found.append(Mismatch("contribution", (src, dst), i))
    for stage in range(cfg.stages):
        first = results[cfg.rank(stage, 0)]
        for replica in range(1, cfg.data_parallel):
            other = results[cfg.rank(stage, replica)]
            i = first_difference([res for _, res in first.reduced], [res for _, res in other.reduced])
            if i is not None:
                found.append(Mismatch("all-reduce", (first.rank, other.rank), i))
    return found


def blame(mismatch: Mismatch, results: list[StageResult], publics: list[bytes], crew: bytes) -> int | None:
    """The member a boundary or contribution mismatch convicts, from the receiver's signed
    record (None for an all-reduce result mismatch: each replica's own re-execution
    settles that one, proof.verify_stage)."""
    if mismatch.kind not in ("boundary", "contribution"):
        return None
    src, dst = mismatch.members
    i = mismatch.index
    records, sigs = results[dst].received.get(src, []), results[dst].received_sigs.get(src, [])
    if i >= len(records) or i >= len(sigs):
        return dst  # the receiver shows no signed record of a message the sender committed
    signed = verify(publics[src], sigs[i], boundary_statement(crew, src, dst, i, records[i]))
    return src if signed else dst
