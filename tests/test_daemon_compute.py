"""The daemon's compute runner: proofs travel as content-addressed blobs, honest work
verifies, a cheat fails its segment, and bad blobs are refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import trio

from node.compute import attacks, datasets
from node.compute.trainer import Run
from node.daemon.blobdir import BlobDir
from node.daemon.compute import MarketComputeRunner
from node.daemon.proofblobs import fetch_state, leaf_at, publish_run
from node.transport.errors import BlobNotFound
from protocol.encoding import sha256
from protocol.errors import BlobError
from protocol.market.jobs import (
    ArbitrationJob,
    MarketTrainJob,
    MarketTrainResult,
    SegmentCheckJob,
    SegmentCheckResult,
)
from protocol.pol.spec import LossKind, OptimizerKind, OptimizerSpec, ReproProfile, TaskSpec, linear, relu
from protocol.records import encode_record, record_hash

torch.set_num_threads(1)


def _task_setup() -> tuple[TaskSpec, datasets.Dataset]:
    data = datasets.synthetic(128, (8,), 3, 7)
    spec = TaskSpec(1, (8,), 3, (linear(8, 8), relu(), linear(8, 3)), LossKind.CROSS_ENTROPY,
                    OptimizerSpec(OptimizerKind.ADAM, 0.01), 16, 12, 4, data.digest, len(data), 1, 2, 3,
                    ReproProfile(threads=1))
    return spec, data


class DictStore:
    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}

    def put(self, data: bytes) -> bytes:
        d = sha256(data)
        self.blobs[d] = data
        return d

    def get(self, digest: bytes, max_size: int) -> bytes:
        data = self.blobs.get(digest)
        if data is None or len(data) > max_size:
            raise BlobError("missing")
        return data


def test_every_checkpoint_comes_back_bit_exact_from_the_root() -> None:
    spec, data = _task_setup()
    run = attacks.honest(spec, data)
    store = DictStore()
    root = publish_run(store.put, run)
    assert root == run.root()
    for i, state in enumerate(run.checkpoints()):
        leaf = leaf_at(store.get, root, spec.num_checkpoints, i)
        assert leaf == run.leaves()[i]
        back = fetch_state(store.get, spec, leaf)
        assert back.leaf(leaf.step, spec.data_seed) == leaf
        assert all(torch.equal(a, b) for a, b in zip(back.params, state.params, strict=True))


def test_a_tensor_blob_of_the_wrong_shape_is_refused() -> None:
    spec, data = _task_setup()
    run = Run(spec, data)
    run.train()
    store = DictStore()
    root = publish_run(store.put, run)
    leaf = leaf_at(store.get, root, spec.num_checkpoints, 1)
    other_spec = replace(spec, layers=(linear(8, 4), relu(), linear(4, 3)))
    with pytest.raises(BlobError):
        fetch_state(store.get, other_spec, leaf)


def test_walking_past_the_last_checkpoint_is_refused() -> None:
    store = DictStore()
    with pytest.raises(BlobError):
        leaf_at(store.get, b"\0" * 32, 3, 3)


class _Network:
    """Stands in for the transport: every node's blob dir is reachable."""

    def __init__(self) -> None:
        self.dirs: list[BlobDir] = []
        self.asked: list[Any] = []

    async def fetch(self, digest: bytes, max_size: int, peers: Any = None) -> bytes:
        self.asked.append(peers)
        for d in self.dirs:
            data = d.read(digest)
            if data is not None and len(data) <= max_size:
                return data
        raise BlobNotFound("nobody has it")


def _runner(tmp: Path, net: _Network, name: str, me: bytes, view: Any, cheat: str | None = None) -> Any:
    blobs = BlobDir(tmp / name)
    blobs.root.mkdir()
    net.dirs.append(blobs)
    return MarketComputeRunner(blobs, net.fetch, lambda: view, me, cheat=cheat)


def _market(task: Any) -> Any:
    return SimpleNamespace(market=SimpleNamespace(tasks={task.task_id: task}))


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


@pytest.mark.parametrize("cheat", [None, "skipped_steps"])
def test_a_verifier_on_another_node_fetches_the_proof_and_judges_it(
    tmp_path: Path, cheat: str | None
) -> None:
    spec, data = _task_setup()
    tid = b"\x01" * 32
    task = SimpleNamespace(task_id=tid, spec_hash=record_hash(spec), solver=b"S" * 32, submitter=b"U" * 32,
                           proof_root=None,
                           threshold_ppm=0)
    view = _market(task)
    net = _Network()
    submitter = _runner(tmp_path, net, "submitter", b"U" * 32, view)
    submitter.blobs.put(encode_record(spec))
    submitter.blobs.put(data.blob)
    solver = _runner(tmp_path, net, "solver", b"S" * 32, view, cheat=cheat)
    verifier = _runner(tmp_path, net, "verifier", b"V" * 32, view)

    async def main() -> tuple[Any, Any, Any]:
        trained = await _in_thread(solver, "train", MarketTrainJob(tid, record_hash(spec)))
        task.proof_root = trained.merkle_root
        check = await _in_thread(verifier, "verify", SegmentCheckJob(tid, trained.merkle_root, 1, 0))
        arb = await _in_thread(verifier, "arb", ArbitrationJob(tid, 1, 0, b"", b""))
        return trained, check, arb

    trained, check, arb = trio.run(main)
    assert isinstance(trained, MarketTrainResult) and trained.n_checkpoints == spec.num_checkpoints
    assert isinstance(check, SegmentCheckResult)
    assert check.passed is (cheat is None)
    assert arb.defender_right is (cheat is None)
    if cheat is None:
        assert check.distance_ppm == 0
    # The solver and the submitter, who hold the blobs for sure, are asked before anyone else.
    assert net.asked and all(p == (b"S" * 32, b"U" * 32) for p in net.asked)


def test_a_proof_nobody_serves_fails_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import node.daemon.compute as compute

    monkeypatch.setattr(compute, "FETCH_BACKOFF_S", 0.0)
    spec, data = _task_setup()
    tid = b"\x02" * 32
    task = SimpleNamespace(task_id=tid, spec_hash=record_hash(spec), solver=b"S" * 32, submitter=b"U" * 32,
                           proof_root=b"\x09" * 32, threshold_ppm=0)
    net = _Network()
    verifier = _runner(tmp_path, net, "verifier", b"V" * 32, _market(task))
    verifier.blobs.put(encode_record(spec))
    verifier.blobs.put(data.blob)

    async def main() -> Any:
        return await _in_thread(verifier, "verify", SegmentCheckJob(tid, b"\x09" * 32, 0, 0))

    result = trio.run(main)
    assert result.passed is False and result.distance_ppm == 1_000_000
