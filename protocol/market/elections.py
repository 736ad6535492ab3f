"""Deterministic, stake-weighted elections from the randomness beacon, and forced errors.

Every node computes the same election from the same committed beacon, so elections need
no messages. The beacon of a block is fixed only once the previous block is committed,
which is after the transaction that triggers an election (a submit, a proof commitment)
was signed: nobody can grind their way into a role.

Draws are SHA-256 in counter mode reduced modulo the total weight; with 256-bit draws
and weights below 2**64 the modulo bias is under 2**-190, far below anything a stake
holder could exploit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from protocol.encoding import sha256
from protocol.market.params import BPS, PPM, MarketParams
from protocol.market.state import Task, Worker
from protocol.market.txs import Verdict
from protocol.pol.merkle import MerkleProof, inclusion_proof, merkle_root
from protocol.records import encode_record

ELECTION_DOMAIN = b"polnet/market/elect/v1\x00"
FORCED_COMMIT_DOMAIN = b"polnet/market/forced-commit/v1\x00"
FORCED_DRAW_DOMAIN = b"polnet/market/forced-draw/v1\x00"
VERDICT_DOMAIN = b"polnet/market/verdict/v1\x00"
DUTY_SECRET_DOMAIN = b"polnet/market/duty-secret/v1\x00"
#: Duty secrets under one commitment: a worker commits to a Merkle tree of this many
#: one-duty secrets, uses the next one at each election as verifier, and registers a
#: fresh tree when they run out. Each duty's secret is revealed alone (with its proof),
#: so revealing one duty's forcing says nothing about the worker's other open duties.
SECRETS_PER_COMMIT = 64
SEGMENT_DOMAIN = b"polnet/market/segment/v1\x00"


class Role:
    SOLVER = b"solver"
    PROFILER = b"profiler"
    VERIFIER = b"verifier"
    WATCHER = b"watcher"


def draw(seed: bytes, counter: int, bound: int) -> int:
    """Uniform integer in [0, bound) from the seed's counter-th hash block."""
    if bound <= 0:
        raise ValueError("bound must be positive")
    digest = sha256(seed + counter.to_bytes(8, "big"))
    return int.from_bytes(digest, "big") % bound


def election_seed(beacon: bytes, task_id: bytes, role: bytes) -> bytes:
    return sha256(ELECTION_DOMAIN + beacon + task_id + role)


def weighted_sample(candidates: Sequence[tuple[bytes, int]], seed: bytes, k: int) -> list[bytes]:
    """Pick up to k distinct keys, each draw proportional to weight among those left.

    Candidates are sorted by key first so the result never depends on dict order.
    """
    pool = sorted((key, w) for key, w in candidates if w > 0)
    chosen: list[bytes] = []
    for counter in range(min(k, len(pool))):
        total = sum(w for _, w in pool)
        point = draw(seed, counter, total)
        for i, (key, w) in enumerate(pool):
            if point < w:
                chosen.append(key)
                del pool[i]
                break
            point -= w
    return chosen


def fits(worker: Worker, task: Task, params: MarketParams, gflops: int | None = None) -> bool:
    """Whether a worker's capacity class, price and stake fit a task (any role). `gflops`:
    the share of the task's work this worker would take (default: all of it; a crew
    member takes its share, protocol/market/crews.py)."""
    budget = (task.gflops if gflops is None else gflops) * task.max_price_per_gflop
    return (
        worker.device == task.device
        and worker.memory_mb >= task.min_memory_mb
        and worker.flops > 0
        and worker.stake >= params.min_worker_stake
        and budget * BPS <= worker.stake * params.max_budget_per_stake_bps
        and worker.jobs < params.max_jobs_per_worker
        and worker.pubkey != task.submitter
        and worker.pubkey not in task.excluded
    )


def eligible_solvers(workers: Iterable[Worker], task: Task, params: MarketParams) -> list[tuple[bytes, int]]:
    return [
        (w.pubkey, w.stake)
        for w in workers
        if fits(w, task, params) and w.price_per_gflop <= task.max_price_per_gflop
    ]


def eligible_verifiers(
    workers: Iterable[Worker], task: Task, params: MarketParams
) -> list[tuple[bytes, int]]:
    """Verifiers re-execute on the task's device class, are never the solver (nor in the
    crew), and must hold an unused duty secret under a committed tree (its forcing must
    be private)."""
    taken = {task.solver, *task.profilers, *task.crew, *(v.pubkey for v in task.verifiers), *task.watchers}
    # A crew's verifier checks one member, so its stake need back only that member's share.
    share = task.gflops // task.crew_size if task.is_crew else None
    return [
        (w.pubkey, w.stake)
        for w in workers
        if fits(w, task, params, share) and w.secret_commit is not None and w.duty_index < SECRETS_PER_COMMIT
        and w.pubkey not in taken
    ]


def duty_secret(seed: bytes, index: int) -> bytes:
    """The worker's private secret for its index-th verifier duty under one commitment."""
    return sha256(DUTY_SECRET_DOMAIN + seed + index.to_bytes(4, "big"))


def _duty_leaves(seed: bytes) -> list[bytes]:
    return [sha256(FORCED_COMMIT_DOMAIN + duty_secret(seed, i)) for i in range(SECRETS_PER_COMMIT)]


def duty_leaf(secret: bytes) -> bytes:
    return sha256(FORCED_COMMIT_DOMAIN + secret)


def forced_error_commitment(seed: bytes) -> bytes:
    """What a verifier publishes at registration: the root of its duty secrets (the seed
    and the secrets stay private until each duty's secret is revealed)."""
    return merkle_root(_duty_leaves(seed))


def duty_reveal(seed: bytes, index: int) -> tuple[bytes, MerkleProof]:
    """The index-th duty secret and its membership proof against the commitment."""
    return duty_secret(seed, index), inclusion_proof(_duty_leaves(seed), index)


def is_forced(secret: bytes, beacon: bytes, task_id: bytes, forced_error_ppm: int) -> bool:
    """Whether this verifier must post a wrong verdict on this task.

    The beacon is fixed after the secret was committed, so the verifier cannot choose
    when it is forced; the secret is private, so nobody else knows until it is revealed.
    """
    digest = sha256(FORCED_DRAW_DOMAIN + secret + beacon + task_id)
    return int.from_bytes(digest[:8], "big") % PPM < forced_error_ppm


def verdict_commitment(task_id: bytes, verifier: bytes, verdict: Verdict, salt: bytes) -> bytes:
    """Binding, hiding commitment to a verdict; the verifier key stops copying others'."""
    return sha256(VERDICT_DOMAIN + task_id + verifier + encode_record(verdict) + salt)


def sample_segment(beacon: bytes, task_id: bytes, verifier: bytes, n_segments: int) -> int:
    """The segment a verifier must re-execute, fixed by a beacon drawn after the proof."""
    return draw(sha256(SEGMENT_DOMAIN + beacon + task_id + verifier), 0, n_segments)
