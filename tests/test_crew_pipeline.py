"""A crew of real processes (node/compute/crew): GPipe over gloo, one stage per process.

Pins that cutting a model into stages changes nothing in fp32, that a crew's run is a
pure function of its config (every boundary message, bit for bit), that each boundary's
two ends record the same messages, that AQ-SGD moves fewer bytes, and that a member
vanishing mid-run aborts the whole crew instead of leaving it blocked."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch

from node.compute import datasets
from node.compute.crew.channels import EmulatedLinks, Link
from node.compute.crew.launch import CrewAborted, run_local_crew
from node.compute.crew.model import ModelShape, block_split
from node.compute.crew.pipeline import CrewConfig, epoch_order, schedule, windows

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TINY = CrewConfig(stages=4, shape=ModelShape(blocks=4, width=16, heads=2, context=16), micro_batch=4,
                  micro_batches=2, epochs=2, n_train=16, n_val=8, lr=3e-3, seed=3)
#: 2 stages x 2 replicas (4 processes), each replica 2 micro-batches of 2 a step.
DP = replace(TINY, stages=2, data_parallel=2, micro_batch=2)
TOKENS = datasets.corpus().tokens


def test_blocks_are_spread_evenly_earliest_stages_first() -> None:
    assert block_split(6, 4) == [range(0, 2), range(2, 4), range(4, 5), range(5, 6)]
    with pytest.raises(ValueError):
        block_split(3, 4)


def test_every_epoch_visits_every_sample_once_and_micro_batches_never_mix_epochs() -> None:
    for cfg in (TINY, DP):
        steps = list(schedule(cfg))
        assert len(steps) == cfg.epochs * cfg.steps_per_epoch
        assert all(len(step) == cfg.data_parallel for step in steps)
        per_epoch = cfg.steps_per_epoch
        for e in range(cfg.epochs):
            ids = torch.cat([m for step in steps[e * per_epoch : (e + 1) * per_epoch]
                             for replica in step for m in replica])
            assert sorted(ids.tolist()) == list(range(cfg.n_train))
    assert not torch.equal(epoch_order(TINY, 0), epoch_order(TINY, 1))


def test_a_four_stage_fp32_crew_trains_exactly_what_one_worker_trains() -> None:
    fp32 = replace(TINY, bits=None, grad_bits=None)
    crew = run_local_crew(fp32, TOKENS, deadline_s=300)
    alone = run_local_crew(replace(fp32, stages=1), TOKENS, deadline_s=300)
    assert crew[-1].losses == alone[0].losses  # bit for bit: fp32 boundaries are exact
    assert crew[-1].val_loss == alone[0].val_loss


def test_an_aqsgd_crew_is_bit_reproducible_and_both_ends_of_each_boundary_agree() -> None:
    cfg = replace(TINY, bits=2)
    a = run_local_crew(cfg, TOKENS, deadline_s=300)
    b = run_local_crew(cfg, TOKENS, deadline_s=300)
    assert [r.params_digest for r in a] == [r.params_digest for r in b]
    assert [r.sent for r in a] == [r.sent for r in b] and a[-1].losses == b[-1].losses
    for s in range(cfg.stages - 1):
        assert a[s].sent[s + 1] == a[s + 1].received[s]  # forward activations
        assert a[s + 1].sent[s] == a[s].received[s + 1]  # backward gradients
    fp32 = run_local_crew(replace(TINY, bits=None, grad_bits=None), TOKENS, deadline_s=300)
    first = TINY.steps_per_epoch  # epoch 0 goes in full either way; then 2-bit deltas
    assert a[0].forward_by_step[:first] == fp32[0].forward_by_step[:first]
    # 2 bits + one fp32 scale per 16-channel token: 1/8 of fp32 at this width
    assert a[0].forward_bytes_after_first_epoch * 7 < fp32[0].forward_bytes_after_first_epoch


def test_data_parallel_replicas_apply_the_same_all_reduced_gradient_and_stay_identical() -> None:
    a = run_local_crew(DP, TOKENS, deadline_s=300)
    assert [(r.stage, r.replica) for r in a] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for stage in range(DP.stages):
        r0, r1 = a[DP.rank(stage, 0)], a[DP.rank(stage, 1)]
        assert r0.params_digest == r1.params_digest  # the replicas never drift apart
        assert [res for _, res in r0.reduced] == [res for _, res in r1.reduced]
        assert all(c0 != c1 for (c0, _), (c1, _) in zip(r0.reduced, r1.reduced))  # own shares
        assert len(r0.reduced) == DP.epochs * DP.steps_per_epoch
    assert a[DP.rank(0, 0)].params_digest != a[DP.rank(1, 0)].params_digest
    for d in range(DP.data_parallel):  # each replica's pipeline is its own
        assert a[DP.rank(0, d)].sent[DP.rank(1, d)] == a[DP.rank(1, d)].received[DP.rank(0, d)]
    b = run_local_crew(DP, TOKENS, deadline_s=300)
    assert [r.params_digest for r in a] == [r.params_digest for r in b]


def test_a_replica_applies_the_mean_of_its_stages_signed_contributions() -> None:
    from node.compute.crew import aqsgd
    from node.compute.crew.pipeline import StageWorker

    train, _ = windows(TOKENS, DP)
    me, peer = DP.rank(1, 0), DP.rank(1, 1)

    class Replica:  # the other replica contributes twice our gradient
        def __init__(self) -> None:
            self.sent: list[tuple[int, torch.Tensor]] = []

        def send(self, dst: int, data: bytes) -> None:
            self.sent.append((dst, aqsgd.decode_grad(data, (n,))))

        def recv(self, src: int) -> bytes:
            assert src == peer
            return aqsgd.encode_grad(torch.full((n,), 2.0), None)

    channel = Replica()
    worker = StageWorker(DP, me, channel, train)
    n = sum(p.numel() for p in worker.module.parameters())
    for p in worker.module.parameters():
        p.grad = torch.ones_like(p)
    worker._all_reduce()
    assert all(torch.equal(p.grad, torch.full_like(p, 1.5)) for p in worker.module.parameters()
               if p.grad is not None)
    (dst, mine), = channel.sent  # our own contribution went to the replica, unaveraged
    assert dst == peer and torch.equal(mine, torch.ones(n))
    (contribution, result), = worker.transcript.reduced
    assert contribution != result and worker.transcript.sent[peer] and worker.transcript.received[peer]


def test_each_replica_keeps_its_own_shard_of_the_samples_every_epoch() -> None:
    steps = list(schedule(DP))
    shards = [set(), set()]
    for step in steps:
        for d, micro in enumerate(step):
            shards[d].update(int(i) for m in micro for i in m)
    assert shards[0] == set(range(0, DP.n_train, 2)) and shards[1] == set(range(1, DP.n_train, 2))


def test_a_member_vanishing_mid_run_aborts_the_whole_crew_promptly() -> None:
    t = time.monotonic()
    with pytest.raises(CrewAborted, match="member 2"):
        run_local_crew(TINY, TOKENS, deadline_s=120, vanish=(2, 1))
    assert time.monotonic() - t < 60


def test_emulated_links_deliver_no_sooner_than_delay_plus_bytes_over_bandwidth_and_never_block_a_send(
        ) -> None:
    class Loop:
        def __init__(self) -> None:
            self.q: list[tuple[float, bytes]] = []

        def send(self, dst: int, data: bytes) -> None:
            self.q.append((time.monotonic(), data))

        def recv(self, src: int) -> bytes:
            return b""

    inner = Loop()
    link = Link(delay_s=0.05, bits_per_s=8e6)  # 1 MB/s
    a = EmulatedLinks(inner, 0, {(0, 1): link})
    t = time.monotonic()
    a.send(1, bytes(50_000))
    a.send(1, bytes(50_000))  # queued behind the first on the same link
    assert time.monotonic() - t < 0.02  # sends return at once
    a.close()
    (t1, d1), (t2, d2) = inner.q
    assert len(d1) == len(d2) == 50_000
    assert t1 - t >= 0.05 + 0.05 - 0.005 and t2 - t >= 0.05 + 0.1 - 0.005
    assert t2 - t < 0.05 + 0.1 + 0.1  # the delay overlaps: not 2 x (delay + transfer)
