"""A node that says what it is doing: compute progress (step i of n, ETA), where its
chain is, whether it is registered and why not, and capacity measured again when idle."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import pytest
import trio

from node.capacity import Capacity, CapacityEstimate
from node.config import RolesConfig
from node.daemon.chain import Chain, genesis_bytes, read_genesis
from node.daemon.progress import ProgressTracker
from node.daemon.roles import build_roles
from node.daemon.status import CATCHING_UP_LAG_S, CatchUpWatch, chain_status, registration_status
from protocol.commands import Persist, SetTimer, Tick, TimerFired
from protocol.identity import Keypair
from protocol.market.jobs import MarketTrainJob, MarketWork
from protocol.market.roles import RegistrarRole
from protocol.records import encode_record, record_hash
from tests.test_daemon_compute import _facts, _Network, _runner, _task_setup

KEY = Keypair.derive("daemon-progress-test")


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_progress_reports_step_of_total_and_an_eta_from_the_rate_so_far() -> None:
    clock = Clock()
    p = ProgressTracker(clock)
    p.start("job-1", "train", b"\xab" * 32)
    clock.t += 5  # fetching blobs: not part of the stepping rate
    p.set_total(100)
    clock.t += 10
    p.advance(25)
    job = p.snapshot()["job"]
    assert (job["kind"], job["task_id"][:4], job["step"], job["total"], job["percent"]) == (
        "train",
        "abab",
        25,
        100,
        25.0,
    )
    assert job["eta_s"] == pytest.approx(30.0)  # 75 steps left at 2.5 steps/s
    assert job["running_s"] == pytest.approx(15.0)
    clock.t += 30
    p.advance(100)
    p.finish()
    snap = p.snapshot()
    assert snap["job"] is None and snap["jobs_done"] == 1
    assert (snap["last_job"]["outcome"], snap["last_job"]["step"]) == ("done", 100)


def test_progress_is_logged_at_most_every_interval_and_once_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    p = ProgressTracker(clock, log_every_s=10)
    caplog.set_level(logging.INFO, logger="polnet.progress")
    p.start("job", "train")
    p.set_total(800)
    for step in range(1, 801):
        clock.t += 0.0625  # 50 s of training in all (an exact binary fraction)
        p.advance(step)
    p.finish()
    events = [r.getMessage() for r in caplog.records if r.name == "polnet.progress"]
    assert events.count("job progress") == 5
    assert events[-1] == "job finished"


def test_progress_can_be_read_while_a_thread_advances_it() -> None:
    p = ProgressTracker()
    p.start("job", "train")
    p.set_total(10_000)
    seen: list[int] = []

    def work() -> None:
        for i in range(1, 10_001):
            p.advance(i)

    t = threading.Thread(target=work)
    t.start()
    while t.is_alive():
        job = p.snapshot()["job"]
        seen.append(job["step"])
    t.join()
    assert seen == sorted(seen) and p.snapshot()["job"]["step"] == 10_000


def test_jobs_in_two_threads_each_keep_their_own_progress_and_the_longest_is_shown() -> None:
    """A crew member's run and a verify job beside it: each thread's calls act on its own
    job; /status shows the one running longest first and lists both."""
    now = [100.0]
    tracker = ProgressTracker(clock=lambda: now[0])
    started, go_on, done, release = (threading.Event() for _ in range(4))

    def crew() -> None:
        tracker.start("crew-job", "crew-train", b"\x01" * 32)
        tracker.set_total(64)
        started.set()
        go_on.wait(10)
        tracker.advance(10)
        tracker.note("rank 1 stage 0: sent 1.00 MB")
        done.set()
        release.wait(10)
        tracker.finish()

    t = threading.Thread(target=crew)
    t.start()
    assert started.wait(10)
    now[0] = 101.0
    tracker.start("verify-job", "verify", b"\x02" * 32)
    tracker.set_total(4)
    tracker.advance(3)
    go_on.set()
    assert done.wait(10)
    snap = tracker.snapshot()
    assert [j["kind"] for j in snap["jobs"]] == ["crew-train", "verify"]
    assert snap["job"]["kind"] == "crew-train" and snap["job"]["step"] == 10
    assert snap["job"]["detail"].startswith("rank 1") and snap["jobs"][1]["step"] == 3
    tracker.finish()  # this thread's job: the verify
    assert [j["kind"] for j in tracker.snapshot()["jobs"]] == ["crew-train"]
    release.set()
    t.join(10)
    assert tracker.idle() and tracker.jobs_done == 2


def test_the_compute_runner_advances_per_checkpoint_and_trains_what_honest_training_does(
    tmp_path: Path,
) -> None:
    from node.compute import attacks

    spec, data = _task_setup()
    tid = b"\x01" * 32
    net = _Network()
    solver = _runner(tmp_path, net, "solver", b"S" * 32)
    solver.blobs.put(encode_record(spec))
    solver.blobs.put(data.blob)
    steps: list[tuple[int, int]] = []

    class Recording(ProgressTracker):
        def advance(self, step: int) -> None:
            super().advance(step)
            job = self.current()
            assert job is not None
            steps.append((job.step, job.total))

    solver.progress = Recording()
    work = MarketWork(_facts(spec, tid, None), MarketTrainJob(tid, record_hash(spec)))
    result = trio.run(trio.to_thread.run_sync, solver, "train-job", work)
    k = spec.checkpoint_interval
    assert steps == [(s, spec.steps) for s in range(k, spec.steps + 1, k)]
    assert result.merkle_root == attacks.honest(spec, data).root()
    assert solver.progress.snapshot()["last_job"]["kind"] == "train"


def test_catching_up_means_old_blocks_arriving_now() -> None:
    clock = Clock(10_000.0)
    watch = CatchUpWatch(clock)
    watch.observe(5, int((clock.t - CATCHING_UP_LAG_S - 50) * 1000))  # a block from a minute ago
    assert watch.catching_up()
    watch.observe(6, int(clock.t * 1000))  # the tip
    assert not watch.catching_up()
    watch.observe(7, int((clock.t - 100) * 1000))
    clock.t += 60  # and then nothing more: a stalled chain, not a sync
    assert not watch.catching_up()


class Driver:
    """Runs a chain's core as the daemon's driver would (persist inline, timers in time
    order), resumable: each `to(height)` carries on from where the last one stopped."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.now = 1_000
        self.timers: dict[str, int] = {}
        self.events: list[object] = [Tick()]

    def to(self, height: int) -> None:
        for _ in range(100_000):
            if self.chain.height >= height:
                return
            if not self.events:
                key, at = min(self.timers.items(), key=lambda kv: kv[1])
                del self.timers[key]
                self.now = max(self.now, at)
                self.events.append(TimerFired(key))
            for cmd in self.chain.core.handle(self.now, self.events.pop(0)):  # type: ignore[arg-type]
                if isinstance(cmd, Persist):
                    self.chain.store.persist(cmd.kind, cmd.key, cmd.value)
                elif isinstance(cmd, SetTimer):
                    self.timers[cmd.key] = cmd.at
        raise AssertionError(f"stuck at height {self.chain.height}")


def _drive(chain: Chain, height: int) -> Driver:
    driver = Driver(chain)
    driver.to(height)
    return driver


def _chain(tmp: Path, roles_cfg: RolesConfig) -> tuple[Chain, RolesConfig]:
    path = tmp / "genesis.json"
    path.write_bytes(genesis_bytes("progress-test", [KEY]))
    genesis = read_genesis(path)
    roles = build_roles(roles_cfg, KEY, genesis.market, None)
    return Chain.open(genesis, KEY, tmp / "chain.db", 0, roles.roles), roles_cfg


def test_chain_status_says_height_last_block_round_and_genesis(tmp_path: Path) -> None:
    chain, _ = _chain(tmp_path, RolesConfig())
    try:
        _drive(chain, 3)
        block_time = chain.node.last_block.header.time  # type: ignore[union-attr]
        doc = chain_status(chain, CatchUpWatch(), now=block_time / 1000 + 2.5)
        assert (doc["height"], doc["last_block_time_ms"], doc["last_block_age_s"]) == (3, block_time, 2.5)
        assert doc["round"] == 0 and doc["step"] in ("propose", "prevote", "precommit")
        assert doc["genesis_hash"] == chain.genesis.hash().hex() and doc["preset"] == "local"
    finally:
        chain.store.close()


def test_registration_status_says_why_a_worker_is_not_registered(tmp_path: Path) -> None:
    roles = RolesConfig(worker=True, worker_stake=10**15)  # more than the genesis balance
    chain, cfg = _chain(tmp_path, roles)
    try:
        assert registration_status(chain, cfg, KEY.public)["state"] == "waiting"
        _drive(chain, 3)
        doc = registration_status(chain, cfg, KEY.public)
        assert doc["state"] == "unregistered"
        assert "cannot pay the worker stake 1000000000000000" in doc["reason"]
    finally:
        chain.store.close()
    assert registration_status(chain, RolesConfig(), KEY.public)["state"] == "off"


def _registrar(chain: Chain) -> RegistrarRole:
    return next(r for r in chain.core.roles.roles if isinstance(r, RegistrarRole))


def test_a_remeasured_capacity_far_from_the_registered_one_updates_the_ledger(tmp_path: Path) -> None:
    chain, cfg = _chain(tmp_path, RolesConfig(worker=True))
    try:
        driver = _drive(chain, 4)
        doc = registration_status(chain, cfg, KEY.public)
        assert doc["state"] == "registered"
        stake, flops = doc["stake"], doc["flops"]
        registrar = _registrar(chain)
        assert registrar.registration is not None
        # 10 % off: noise, no transaction.
        registrar.registration = dataclasses.replace(registrar.registration, flops=flops * 11 // 10)
        driver.to(20)
        assert chain.core.market.workers[KEY.public].flops == flops
        # 10x: the node measured again when idle; the ledger learns it, no stake is added.
        registrar.registration = dataclasses.replace(registrar.registration, flops=flops * 10)
        driver.to(36)
        worker = chain.core.market.workers[KEY.public]
        assert (worker.flops, worker.stake) == (flops * 10, stake)
    finally:
        chain.store.close()


def _cap(flops: int) -> Capacity:
    return Capacity("cpu", "x86_64", 1 << 30, 1, flops, "2")


def test_capacity_advertised_is_the_best_recent_measurement() -> None:
    est = CapacityEstimate(_cap(5), window=3)  # measured at start, under load
    assert est.add(_cap(120)).flops == 120  # idle: the real figure
    assert est.add(_cap(60)).flops == 120  # a busy moment does not lower it
    assert est.add(_cap(70)).flops == 120
    assert est.add(_cap(80)).flops == 80  # three measurements later the old high is gone
    assert est.measurements == 5
