"""A crew member's own resources (node/compute/crew): big AQ-SGD caches spill to files and
are removed with the worker; an emulated link's backlog is bounded like a send buffer;
a local crew whose store port was taken starts again on another."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest

from node.compute import datasets
from node.compute.crew import aqsgd, launch
from node.compute.crew.channels import EmulatedLinks, Link
from node.compute.crew.model import ModelShape
from node.compute.crew.pipeline import CrewConfig, StageWorker, windows

TOKENS = datasets.corpus().tokens
CFG = CrewConfig(stages=2, shape=ModelShape(blocks=2, width=16, heads=2, context=16), micro_batch=4,
                 micro_batches=2, epochs=1, n_train=16, n_val=8, lr=3e-3, seed=3, bits=2)


def test_a_middle_stages_caches_over_the_ram_cap_live_in_its_spill_dir_until_it_closes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aqsgd, "MAX_RAM_CACHE_BYTES", 0)
    train, _ = windows(TOKENS, CFG)
    worker = StageWorker(CFG, 1, None, train, spill_dir=tmp_path)  # type: ignore[arg-type]
    assert worker.receiver is not None and worker.receiver.cache.on_disk
    assert len(list(tmp_path.iterdir())) == 1  # the last stage receives only
    worker.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="spill directory"):
        StageWorker(CFG, 1, None, train)  # type: ignore[arg-type]


def test_an_emulated_links_backlog_is_bounded_and_a_full_one_blocks_the_sender() -> None:
    handed: list[float] = []

    class Loop:
        def send(self, dst: int, data: bytes) -> None:
            handed.append(time.monotonic())

        def recv(self, src: int) -> bytes:
            return b""

    link = Link(delay_s=0.05, bits_per_s=8e6)  # 1 MB/s: 50 KB take 50 ms
    a = EmulatedLinks(Loop(), 0, {(0, 1): link}, max_queued=60_000)
    t = time.monotonic()
    a.send(1, bytes(50_000))
    a.send(1, bytes(50_000))  # the backlog holds one message: this waits for the first to go
    returned = time.monotonic()
    a.close()
    assert returned >= handed[0] - 0.001 and returned - t >= 0.1 - 0.005
    assert len(handed) == 2


@pytest.mark.slow
@pytest.mark.integration
def test_a_crew_whose_store_port_was_taken_starts_again_on_a_free_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    alone = replace(CFG, stages=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], launch.free_port()])
        monkeypatch.setattr(launch, "free_port", lambda: next(ports))
        (result,) = launch.run_local_crew(alone, TOKENS, deadline_s=120)
    assert len(result.losses) == 2


@pytest.mark.slow
@pytest.mark.integration
def test_a_message_corrupted_after_signing_is_refused_and_the_crew_aborts_promptly() -> None:
    t = time.monotonic()
    with pytest.raises(launch.CrewAborted, match="message 1 from member 0 does not carry its signature"):
        launch.run_local_crew(CFG, TOKENS, deadline_s=120, corrupt=(0, 1, 1))
    assert time.monotonic() - t < 60  # no member left waiting on one that will never send
