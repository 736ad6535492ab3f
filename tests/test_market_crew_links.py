"""A crew's ranks from committed links (protocol/market: CommitLinks, crews.seat_crew).

Workers commit the link figures they measured (the same `LinkReport`s they gossip); when
a crew task declares its model, the placement runs the crew scheduler over the elected
members' committed links, where a pair counts only if both ends committed figures that
agree. Every node reads the same committed reports, so every node seats the same crew."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from protocol.market.chain import load_market, save_market
from protocol.market.crews import LINK_TTL_BLOCKS, MIB, committed_links, shape_of, workload_of
from protocol.market.errors import NotAuthorized, OutOfBounds
from protocol.market.state import CommittedLinks, Status
from protocol.market.txs import CommitLinks, DeregisterWorker
from protocol.schedule.book import MISSING_DELAY_MS
from protocol.schedule.cost import build_problem, evaluate, grid_of
from protocol.schedule.links import LinkReport
from protocol.schedule.model import Device, Shape
from tests.test_market_crew_tasks import CrewWorld, crew_submit
from tests.test_market_rules import until

#: A 4-stage pipeline of a declared model (4 blocks: one a stage).
MODEL = dict(model_blocks=4, model_width=64, model_context=64, micro_batch=4, micro_batches=4)
GBIT_KBPS = 1_000_000


def report(peer: bytes, delay_us: int, kbps: int = GBIT_KBPS) -> LinkReport:
    return LinkReport(peer, delay_us, kbps, 3, 1_000)


def line_links(w: CrewWorld, spacing_us: int = 20_000) -> dict[bytes, int]:
    """Every worker commits links to every other, as if they stood on a line: the delay
    grows with the distance, so the best pipeline visits them in line order."""
    where = {pk: i for i, pk in enumerate(w.workers)}
    for pk in w.workers:
        reports = tuple(report(q, spacing_us * abs(where[pk] - where[q])) for q in w.workers if q != pk)
        assert w.apply(pk, CommitLinks(reports, 0, 0)) is None
    return where


def placed_crew(w: CrewWorld, **kw: object) -> list[bytes]:
    tid = w.submit_crew(**{"stages": 4, "data_parallel": 1, **MODEL, **kw})  # type: ignore[arg-type]
    until(w, tid, Status.TRAINING)
    return w.task(tid).crew


@pytest.mark.parametrize("salt", range(4))
def test_a_pipeline_crew_is_seated_along_its_members_fastest_links(salt: int) -> None:
    w = CrewWorld()
    where = line_links(w)
    order = [where[m] for m in placed_crew(w, salt=salt)]
    assert order in (sorted(order), sorted(order, reverse=True)), order


def test_without_a_declared_model_the_ranks_follow_the_draw() -> None:
    w = CrewWorld()
    where = line_links(w)
    tid = w.submit_crew(stages=4, data_parallel=1, salt=7)
    until(w, tid, Status.TRAINING)
    assert w.task(tid).model == ()
    plain = [where[m] for m in w.task(tid).crew]
    assert plain not in (sorted(plain), sorted(plain, reverse=True))  # this draw is not line order


def test_the_seating_is_the_cheapest_of_every_order_over_the_committed_matrix() -> None:
    w = CrewWorld()
    line_links(w)
    crew = placed_crew(w, salt=3)
    task = next(t for t in w.state.tasks.values() if t.crew == crew)
    shape = shape_of(task)
    devices = [Device(float(w.state.workers[m].flops), w.state.workers[m].memory_mb * MIB) for m in crew]
    problem = build_problem(devices, committed_links(w.state.links, crew, w.state.height),
                            workload_of(task.model, shape), Shape(shape.stages, shape.data_parallel))

    def cost(stage_of_member: tuple[int, ...]) -> int:
        placement = tuple((stage, 0) for stage in stage_of_member)
        return evaluate(problem, grid_of(placement, Shape(shape.stages, 1))).total_ns

    seated = cost((0, 1, 2, 3))  # member i sits at rank i: stage i of a 4 x 1 crew
    assert seated == min(cost(p) for p in itertools.permutations(range(4)))
    assert seated < cost((1, 0, 2, 3))


def test_a_link_counts_only_when_both_ends_committed_figures_that_agree() -> None:
    w = CrewWorld()
    a, b, c = w.workers[:3]
    w.apply(a, CommitLinks((report(b, 10_000), report(c, 10_000)), 0, 0))
    w.apply(b, CommitLinks((report(a, 12_000),), 0, 0))
    w.apply(c, CommitLinks((report(a, 90_000),), 0, 0))  # c contradicts a: too far apart
    links = committed_links(w.state.links, (a, b, c), w.state.height)
    assert links.delay_ms[0][1] == links.delay_ms[1][0] == 12.0  # the worse of the two
    assert links.delay_ms[0][2] == MISSING_DELAY_MS
    assert links.delay_ms[1][2] == MISSING_DELAY_MS  # neither reported it


def test_old_commits_stop_counting_and_a_new_commit_replaces_the_last() -> None:
    w = CrewWorld()
    a, b = w.workers[:2]
    w.apply(a, CommitLinks((report(b, 10_000),), 0, 0))
    w.apply(b, CommitLinks((report(a, 10_000),), 0, 0))
    assert committed_links(w.state.links, (a, b), w.state.height + LINK_TTL_BLOCKS).delay_ms[0][1] == 10.0
    assert committed_links(w.state.links, (a, b), w.state.height + LINK_TTL_BLOCKS + 1).delay_ms[0][1] \
        == MISSING_DELAY_MS
    w.apply(a, CommitLinks((report(w.workers[2], 5_000),), 0, 0))
    assert [r.peer for r in w.state.links[a].reports] == [w.workers[2]]


def test_link_commits_outside_the_rules_are_refused() -> None:
    w = CrewWorld()
    a, b = w.workers[:2]
    assert isinstance(w.apply(w.submitter, CommitLinks((report(a, 1_000),), 0, 0)), NotAuthorized)
    for bad in ((report(b, 1_000), report(b, 2_000)),  # one peer twice
                (report(a, 1_000),),  # a link to itself
                (LinkReport(b, 1_000, 0, 3, 1),),  # no bandwidth
                (LinkReport(b, 1_000, 1, 0, 1),)):  # no measurement
        assert isinstance(w.apply(a, CommitLinks(bad, 0, 0)), OutOfBounds), bad
    assert a not in w.state.links


def test_a_worker_that_leaves_takes_its_links_with_it() -> None:
    w = CrewWorld()
    a, b = w.workers[:2]
    w.apply(a, CommitLinks((report(b, 1_000),), 0, 0))
    assert w.apply(a, DeregisterWorker(0, 0, 0)) is None
    assert a not in w.state.links


def test_crew_models_outside_the_rules_are_refused() -> None:
    w = CrewWorld()
    for bad in (dict(MODEL, model_blocks=1),  # fewer blocks than stages
                dict(MODEL, micro_batch=0),  # a model with no batch
                dict(MODEL, model_width=0)):
        refused = w.apply(w.submitter, crew_submit(stages=2, data_parallel=2, **bad))
        assert isinstance(refused, OutOfBounds), bad


def test_committed_links_and_the_model_round_trip_through_the_ledger_tables() -> None:
    from tests.test_market_ledger import genesis

    state = genesis()
    market = load_market(state)
    peer = b"p" * 32
    market.links[b"w" * 32] = CommittedLinks(3, (report(peer, 7_000),))
    save_market(state, market)
    again = load_market(state)
    assert again.links[b"w" * 32] == CommittedLinks(3, (report(peer, 7_000),))
    w = CrewWorld()
    tid = w.submit_crew(**MODEL)
    from protocol.market.store import freeze_task, thaw_task

    task = w.task(tid)
    assert task.model == (4, 64, 64, 4, 4)
    assert thaw_task(tid, freeze_task(task)) == task
    assert thaw_task(tid, freeze_task(replace(task, model=()))).model == ()


def test_at_most_two_crews_are_seated_by_the_scheduler_in_one_block() -> None:
    """A flood of crew tasks cannot make every node run the placement search for all of
    them in one block: the rest wait for the next blocks, and all are placed."""
    w = CrewWorld(n_workers=40)
    line_links(w)
    tids = [w.submit_crew(stages=2, data_parallel=1, **dict(MODEL, model_blocks=2), salt=s) for s in range(5)]
    placed_at: dict[bytes, int] = {}
    for _ in range(20):
        w.block()
        for tid in tids:
            if w.task(tid).crew and tid not in placed_at:
                placed_at[tid] = w.state.height
    assert len(placed_at) == 5
    per_block: dict[int, int] = {}
    for h in placed_at.values():
        per_block[h] = per_block.get(h, 0) + 1
    assert max(per_block.values()) == 2, per_block


def test_a_worker_commits_its_links_when_missing_changed_or_aging_and_never_in_a_burst() -> None:
    from protocol.market.linkcommit import MIN_GAP_BLOCKS, RECOMMIT_BLOCKS, LinkCommitter, MeasuredLinks

    w = CrewWorld()
    me, b, c = w.workers[:3]
    committer = LinkCommitter()
    assert committer.due(w.state, me) is None  # nothing measured yet
    committer.offer(MeasuredLinks((report(b, 10_000), report(me, 1), LinkReport(b, 9_000, 5, 3, 999))), me)
    assert [r.peer for r in committer.measured] == [b]  # no self-link, the freshest per peer
    tx = committer.due(w.state, me)
    assert tx is not None and w.apply(me, tx) is None
    assert committer.due(w.state, me) is None  # just sent
    w.state.height += MIN_GAP_BLOCKS
    assert committer.due(w.state, me) is None  # committed and still what it measures
    committer.offer(MeasuredLinks((report(b, 10_500),)), me)
    assert committer.due(w.state, me) is None  # within the book's tolerance: the same link
    committer.offer(MeasuredLinks((report(b, 10_000), report(c, 4_000))), me)
    assert committer.due(w.state, me) is not None  # another peer set
    committer.offer(MeasuredLinks((report(b, 10_000),)), me)
    w.state.height += RECOMMIT_BLOCKS
    assert committer.due(w.state, me) is not None  # half the placement's window old
    assert LinkCommitter(measured=(report(b, 1),)).due(w.state, w.submitter) is None  # not a worker
