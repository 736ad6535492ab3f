"""A crew task's members, from committed state: who is elected, where each one sits, and
who is paid or slashed once the crew has been verified.

A crew task trains one model on `stages x data_parallel` workers (docs/parallel.md). These
are the market's rules for it as pure functions, so every node derives the same crew with
no message: the election is the solver election's weighted draw made `size` times
without replacement under its own role label; the placement is the crew scheduler
(protocol/schedule) over the members' registered capacity, bounded by a count of cost
evaluations (never a clock) and seeded from the beacon; the payout pays each member its
share and slashes only the members the verification convicted. The stage table runs
them (protocol/market/blocks.py, process.py, settle.py; docs/parallel.md, "Through the
market").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol.encoding import sha256
from protocol.errors import ValidationError
from protocol.market.elections import election_seed, fits, weighted_sample
from protocol.market.params import MarketParams
from protocol.market.state import MAX_CREW, CommittedLinks, Task, Worker
from protocol.market.txs import SubmitTask
from protocol.schedule.book import link_matrix
from protocol.schedule.model import Budget, Device, Links, Shape, Workload

#: The election's role label (elections.election_seed): a crew draw never equals a
#: solver or verifier draw of the same task.
CREW_ROLE = b"crew"
PLACE_DOMAIN = b"polnet/market/crew-place/v1\x00"
SAMPLE_DOMAIN = b"polnet/market/crew-sample/v1\x00"
CREW_TAG_DOMAIN = b"polnet/market/crew-tag/v1\x00"
#: Cost evaluations of the placement search: the same on every node, so the same result.
PLACEMENT_EVALUATIONS = 20_000
#: Crews the scheduler seats in one block: one search costs every node 0.1-0.3 s (4 to
#: 16 members on this box), so a flood of crew tasks placed at once cannot stall blocks.
MAX_SEATINGS_PER_BLOCK = 2
MIB = 1 << 20
#: Links assumed between two members that have not committed a measurement of theirs:
#: every pair alike, so the placement then only balances compute and memory.
DEFAULT_DELAY_MS = 50.0
DEFAULT_BANDWIDTH_GBPS = 0.1
#: Committed link reports older than this many blocks are not believed by the placement
#: (the daemons re-commit theirs well within it: node/daemon/links.py).
LINK_TTL_BLOCKS = 600
#: The crew model's vocabulary (node/compute/crew/model.py: a byte-level transformer).
BYTE_VOCAB = 256
FP32_BYTES = 4


@dataclass(frozen=True, slots=True)
class CrewShape:
    stages: int
    data_parallel: int

    def __post_init__(self) -> None:
        if self.stages < 1 or self.data_parallel < 1 or self.size > MAX_CREW:
            raise ValidationError(f"a crew of {self.stages} x {self.data_parallel} is outside 1..{MAX_CREW} "
                                  "members")

    @property
    def size(self) -> int:
        return self.stages * self.data_parallel

    def rank(self, stage: int, replica: int) -> int:
        """Stage-major, as the crew engine numbers its members (pipeline.CrewConfig.rank)."""
        return stage * self.data_parallel + replica


def shape_of(task: Task) -> CrewShape:
    return CrewShape(task.stages, task.data_parallel)


def crew_sample_seed(beacon: bytes, task_id: bytes, stage: int) -> bytes:
    """The seed of the segments checked on every member of `stage`: the task's verify
    beacon (drawn after every member committed, so none knew its sample), the task and
    the stage. A verifier and the validators of a crew game draw the same segments, and
    so do all replicas of one stage (their all-reduce is checked from every side)."""
    return sha256(SAMPLE_DOMAIN + beacon + task_id + stage.to_bytes(4, "big"))


def crew_tag(task_id: bytes, members: Sequence[bytes], attempt: int = 0) -> bytes:
    """A crew's name: its task, its members by rank and which placement of the task it is
    (`Task.replacements`: the same members re-elected after an abort are another crew, so
    a late message of the old one is never taken for the new one's). Members sign their
    boundary messages under it and rendezvous by it."""
    return sha256(CREW_TAG_DOMAIN + task_id + attempt.to_bytes(2, "big") + b"".join(members))


def member_gflops(task: Task, shape: CrewShape) -> int:
    """Each member's share of the task's work (rounded up: the crew is never underpaid)."""
    return -(-task.gflops // shape.size)


def member_fits(worker: Worker, task: Task, shape: CrewShape, params: MarketParams) -> bool:
    """`elections.fits` for one member, judged on its own share of the budget, not the whole
    task's (a crew exists for work too big for any one worker), at no more than the task's
    price."""
    return (fits(worker, task, params, member_gflops(task, shape))
            and worker.price_per_gflop <= task.max_price_per_gflop)


def elect_crew(workers: Iterable[Worker], task: Task, shape: CrewShape, params: MarketParams,
               beacon: bytes) -> tuple[bytes, ...] | None:
    """`shape.size` distinct members drawn by stake among those that fit, or None when
    fewer fit (the task then waits or is refunded by the stage rules)."""
    pool = [(w.pubkey, w.stake) for w in workers if member_fits(w, task, shape, params)]
    if len(pool) < shape.size:
        return None
    return tuple(weighted_sample(pool, election_seed(beacon, task.task_id, CREW_ROLE), shape.size))


def model_of(tx: SubmitTask) -> tuple[int, int, int, int, int]:
    """A crew submit's model fields, in `Task.model`'s order."""
    return (tx.model_blocks, tx.model_width, tx.model_context, tx.micro_batch, tx.micro_batches)


def workload_of(model: Sequence[int], shape: CrewShape) -> Workload:
    """The crew's model as the scheduler's cost model sees it: fp32 on the wire both ways
    (the bound the placement plans for; AQ-SGD only ever sends less)."""
    blocks, width, context, micro_batch, micro_batches = model
    return Workload(num_layers=blocks, hidden_size=width, seq_len=context,
                    global_batch_seqs=float(micro_batch * micro_batches * shape.data_parallel),
                    micro_batch_seqs=float(micro_batch), num_params=float(12 * blocks * width * width),
                    vocab_size=BYTE_VOCAB, gradient_bytes_per_param=FP32_BYTES,
                    activation_bytes_per_elem=FP32_BYTES)


def committed_links(links: Mapping[bytes, CommittedLinks], members: Sequence[bytes], height: int) -> Links:
    """The members' link matrix (member order) from their committed reports still within
    LINK_TTL_BLOCKS: a pair counts only where both ends committed figures that agree
    (protocol/schedule/book.py), every other pair is the missing link."""
    live = {}
    for m in members:
        entry = links.get(m)
        if entry is not None and height - entry.height <= LINK_TTL_BLOCKS:
            live[m] = {r.peer: r for r in entry.reports}
    return link_matrix(live, members)


def seat_crew(members: Sequence[bytes], workers: Mapping[bytes, Worker],
              links: Mapping[bytes, CommittedLinks], task: Task, height: int,
              beacon: bytes) -> tuple[bytes, ...]:
    """The elected members by rank: placed by the scheduler over their committed links
    when the task declared its model, else in the order drawn."""
    if not task.model:
        return tuple(members)
    shape = shape_of(task)
    seats = place_crew(members, workers, task, shape, workload_of(task.model, shape), beacon,
                       committed_links(links, members, height))
    return tuple(s.member for s in seats)


def default_links(n: int) -> Links:
    row = tuple(DEFAULT_DELAY_MS for _ in range(n))
    bw = tuple(DEFAULT_BANDWIDTH_GBPS for _ in range(n))
    return Links(tuple(row for _ in range(n)), tuple(bw for _ in range(n)))


@dataclass(frozen=True, slots=True)
class Seat:
    member: bytes
    stage: int
    replica: int


def place_crew(members: Sequence[bytes], workers: Mapping[bytes, Worker], task: Task, shape: CrewShape,
               workload: Workload, beacon: bytes, links: Links | None = None) -> tuple[Seat, ...]:
    """Each member's (stage, replica), by rank: the scheduler over the members' registered
    FLOP/s and memory and `links` (member order; `default_links` without measurements),
    seeded from the beacon and the task, with a fixed evaluation budget."""
    if len(members) != shape.size or len(set(members)) != shape.size:
        raise ValidationError(f"a {shape.stages} x {shape.data_parallel} crew needs {shape.size} distinct "
                              "members")
    # Imported here: the search needs numpy and scipy (about 50 MB of a daemon's RSS),
    # and only a block that places a crew runs it.
    from protocol.schedule.driver import schedule

    devices = [Device(float(workers[m].flops), workers[m].memory_mb * MIB) for m in members]
    seed = int.from_bytes(sha256(PLACE_DOMAIN + beacon + task.task_id)[:8], "big")
    found = schedule(devices, links or default_links(len(members)), workload,
                     shape=Shape(shape.stages, shape.data_parallel), seed=seed,
                     budget=Budget(max_evaluations=PLACEMENT_EVALUATIONS))
    seats = [Seat(m, stage, rep) for m, (stage, rep) in zip(members, found.placement, strict=True)]
    return tuple(sorted(seats, key=lambda s: shape.rank(s.stage, s.replica)))


@dataclass(frozen=True, slots=True)
class CrewPayout:
    """What settling a verified crew moves: each honest member's pay, and the convicted."""

    paid: tuple[tuple[bytes, int], ...]
    slashed: tuple[bytes, ...]
    unspent: int  # the convicted members' shares, back to the submitter or a re-run


def crew_payout(task: Task, shape: CrewShape, prices: Mapping[bytes, int],
                convicted: Iterable[bytes]) -> CrewPayout:
    """Every member not convicted is paid its share at its own price; a convicted member
    is paid nothing and is the only one slashed, whatever its neighbours' work was worth."""
    guilty = set(convicted)
    unknown = guilty - set(prices)
    if unknown:
        raise ValidationError(f"{len(unknown)} convicted key(s) are not members of the crew")
    share = member_gflops(task, shape)
    paid = tuple((m, share * p) for m, p in sorted(prices.items()) if m not in guilty)
    unspent = sum(share * p for m, p in prices.items() if m in guilty)
    return CrewPayout(paid, tuple(sorted(guilty)), unspent)
