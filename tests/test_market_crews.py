"""A crew task's members from committed state (protocol/market/crews.py): every node
elects the same crew whatever order it holds the workers in, by stake, among workers
whose own share fits their stake; the placement is the scheduler's, the same everywhere
and a bijection onto stages x replicas; settling pays every member but the convicted,
who alone is slashed."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from protocol.errors import ValidationError
from protocol.market.crews import CrewShape, crew_payout, elect_crew, member_fits, place_crew
from protocol.market.elections import fits
from protocol.market.params import DEVNET
from protocol.market.state import Task, Worker
from protocol.market.txs import DeviceClass
from protocol.schedule.cost import build_problem, evaluate, grid_of
from protocol.schedule.model import Device, Links, Shape, Workload

SHAPE = CrewShape(stages=4, data_parallel=2)
TASK = Task(task_id=b"\x01" * 32, submitter=b"submitter", spec_hash=b"\x02" * 32, gflops=80_000, steps=64,
            checkpoint_interval=4, ops_per_step=10, device=DeviceClass.CPU, min_memory_mb=1024,
            reproducible=True, max_price_per_gflop=40, escrow=0, submitted_at=0)
WORKLOAD = Workload(num_layers=8, hidden_size=512, seq_len=256, global_batch_seqs=64, micro_batch_seqs=4)


def worker(i: int, stake: int = 1_000_000, **kw: object) -> Worker:
    base = dict(pubkey=f"w{i:02d}".encode(), device=DeviceClass.CPU, memory_mb=4096, flops=10**12,
                price_per_gflop=30, stake=stake, secret_commit=None)
    return Worker(**{**base, **kw})  # type: ignore[arg-type]


WORKERS = [worker(i) for i in range(12)]


def test_every_node_elects_the_same_crew_whatever_order_it_holds_the_workers_in() -> None:
    crew = elect_crew(WORKERS, TASK, SHAPE, DEVNET, b"beacon")
    assert crew is not None and len(set(crew)) == SHAPE.size
    assert elect_crew(list(reversed(WORKERS)), TASK, SHAPE, DEVNET, b"beacon") == crew
    assert elect_crew(WORKERS, TASK, SHAPE, DEVNET, b"another beacon") != crew


def test_a_worker_that_cannot_serve_is_never_elected_and_too_few_means_no_crew() -> None:
    unfit = [worker(90, device=DeviceClass.CUDA), worker(91, memory_mb=512), worker(92, price_per_gflop=41),
             worker(93, stake=100), worker(94, jobs=DEVNET.max_jobs_per_worker),
             replace(worker(95), pubkey=TASK.submitter)]
    excluded = replace(TASK, excluded=[b"w00"])
    for beacon in (b"a", b"b", b"c", b"d"):
        crew = elect_crew(WORKERS[:9] + unfit, excluded, SHAPE, DEVNET, beacon)
        assert crew is not None and set(crew) == {w.pubkey for w in WORKERS[1:9]}
    assert elect_crew(WORKERS[:7], TASK, SHAPE, DEVNET, b"a") is None


def test_a_member_is_judged_on_its_share_so_a_crew_can_take_work_no_single_worker_could() -> None:
    modest = worker(1, stake=40_000)  # backs half its stake in budget: 20 000 / 40 = 500 GFLOP
    big = replace(TASK, gflops=3_000)
    assert not fits(modest, big, DEVNET)  # the whole 3 000 GFLOP task is too much for it
    assert member_fits(modest, big, SHAPE, DEVNET)  # its 375 GFLOP share is not


def test_the_election_favours_stake() -> None:
    rich = [worker(i, stake=4_000_000) for i in range(4)]
    poor = [worker(10 + i) for i in range(8)]
    counts: Counter[bytes] = Counter()
    for n in range(200):
        crew = elect_crew(rich + poor, TASK, CrewShape(1, 2), DEVNET, n.to_bytes(4, "big"))
        assert crew is not None
        counts.update(crew)
    assert min(counts[w.pubkey] for w in rich) > max(counts[w.pubkey] for w in poor)


def test_the_placement_is_the_schedulers_the_same_everywhere_and_seats_each_member_once() -> None:
    members = [w.pubkey for w in WORKERS[:8]]
    by_key = {w.pubkey: w for w in WORKERS}
    # two sites: members 0-3 close together, 4-7 close together, 150 ms and 100 Mbit/s between
    near = [[1.0 if (i < 4) == (j < 4) else 150.0 for j in range(8)] for i in range(8)]
    bw = [[10.0 if (i < 4) == (j < 4) else 0.1 for j in range(8)] for i in range(8)]
    links = Links(tuple(map(tuple, near)), tuple(map(tuple, bw)))
    seats = place_crew(members, by_key, TASK, SHAPE, WORKLOAD, b"beacon", links)
    assert sorted((s.stage, s.replica) for s in seats) == [(k, r) for k in range(4) for r in range(2)]
    assert sorted(s.member for s in seats) == sorted(members)
    assert place_crew(members, by_key, TASK, SHAPE, WORKLOAD, b"beacon", links) == seats
    # no worse than seating the members in their election order
    devices = [Device(1e12, 4096 << 20)] * 8
    problem = build_problem(devices, links, WORKLOAD, Shape(4, 2))
    index = {m: i for i, m in enumerate(members)}
    placement = [(0, 0)] * 8
    for s in seats:
        placement[index[s.member]] = (s.stage, s.replica)
    naive = [(i // 2, i % 2) for i in range(8)]
    cost = evaluate(problem, grid_of(placement, Shape(4, 2)))
    assert cost.key() <= evaluate(problem, grid_of(naive, Shape(4, 2))).key()
    with pytest.raises(ValidationError):
        place_crew(members[:7], by_key, TASK, SHAPE, WORKLOAD, b"beacon")


def test_settling_pays_every_member_its_share_but_the_convicted_who_alone_is_slashed() -> None:
    prices = {b"a": 30, b"b": 35, b"c": 30, b"d": 40}
    shape = CrewShape(2, 2)
    out = crew_payout(TASK, shape, prices, [b"c"])
    share = TASK.gflops // 4
    assert out.paid == ((b"a", share * 30), (b"b", share * 35), (b"d", share * 40))
    assert out.slashed == (b"c",) and out.unspent == share * 30
    assert crew_payout(TASK, shape, prices, []).slashed == ()
    with pytest.raises(ValidationError):
        crew_payout(TASK, shape, prices, [b"stranger"])


def test_a_crew_shape_is_bounded() -> None:
    with pytest.raises(ValidationError):
        CrewShape(0, 2)
    with pytest.raises(ValidationError):
        CrewShape(16, 8)
    assert CrewShape(4, 2).rank(3, 1) == 7
