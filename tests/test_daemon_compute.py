"""The daemon's compute runner: proofs travel as content-addressed blobs, honest work
verifies, a cheat fails its segment, and bad blobs are refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import trio

from node.compute import attacks, datasets
from node.compute.proofblobs import fetch_state, leaf_at, publish_run
from node.compute.trainer import Run
from node.daemon.blobdir import BlobDir
from node.daemon.compute import MarketComputeRunner
from node.transport.errors import BlobNotFound
from protocol.encoding import sha256
from protocol.errors import BlobError, PolnetError
from protocol.market.jobs import MarketTrainJob, MarketWork, SegmentCheckJob, SegmentCheckResult, TaskFacts
from protocol.pol.ops import step_ops
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


def _runner(tmp: Path, net: _Network, name: str, me: bytes, cheat: str | None = None) -> Any:
    blobs = BlobDir(tmp / name)
    blobs.root.mkdir()
    net.dirs.append(blobs)
    return MarketComputeRunner(blobs, net.fetch, me, cheat=cheat, fetch_backoff_s=0.0)


def _facts(spec: TaskSpec, tid: bytes, root: bytes | None, solver: bytes = b"S" * 32) -> TaskFacts:
    return TaskFacts(tid, record_hash(spec), b"U" * 32, solver, root, spec.steps, spec.checkpoint_interval,
                     len(step_ops(spec)), 0)


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


def test_the_solver_and_submitter_are_asked_first_and_never_ourselves(tmp_path: Path) -> None:
    spec, data = _task_setup()
    tid = b"\x01" * 32
    net = _Network()
    submitter = _runner(tmp_path, net, "submitter", b"U" * 32)
    submitter.blobs.put(encode_record(spec))
    submitter.blobs.put(data.blob)
    solver = _runner(tmp_path, net, "solver", b"S" * 32)
    verifier = _runner(tmp_path, net, "verifier", b"V" * 32)

    async def main() -> Any:
        job = MarketTrainJob(tid, record_hash(spec))
        trained = await _in_thread(solver, "train", MarketWork(_facts(spec, tid, None), job))
        check = SegmentCheckJob(tid, trained.merkle_root, 1, 0)
        return await _in_thread(verifier, "verify", MarketWork(_facts(spec, tid, trained.merkle_root), check))

    check = trio.run(main)
    assert isinstance(check, SegmentCheckResult) and check.passed and check.distance_ppm == 0
    # The solver and the submitter, who hold the blobs for sure, are asked before anyone else;
    # the solver asks only the submitter (never itself over the network).
    assert net.asked and all(p in ((b"S" * 32, b"U" * 32), (b"U" * 32,)) for p in net.asked)


def test_a_proof_nobody_serves_is_reported_unavailable(tmp_path: Path) -> None:
    spec, data = _task_setup()
    tid = b"\x02" * 32
    net = _Network()
    verifier = _runner(tmp_path, net, "verifier", b"V" * 32)
    verifier.blobs.put(encode_record(spec))
    verifier.blobs.put(data.blob)

    async def main() -> Any:
        job = SegmentCheckJob(tid, b"\x09" * 32, 0, 0)
        return await _in_thread(verifier, "verify", MarketWork(_facts(spec, tid, b"\x09" * 32), job))

    result = trio.run(main)
    assert result.passed is False and result.available is False


def test_a_job_that_is_not_market_work_is_refused(tmp_path: Path) -> None:
    net = _Network()
    runner = _runner(tmp_path, net, "n", b"N" * 32)
    with pytest.raises(PolnetError):
        runner("x", MarketTrainJob(b"\x01" * 32, b"\x02" * 32))


def _finetune(tmp_path: Path) -> tuple[TaskSpec, datasets.Dataset, bytes, Run]:
    """A task fine-tuning the final checkpoint of an earlier (proven) run."""
    from node.compute.checkpoints import encode_weights, weights_hash
    from protocol.pol.merkle import inclusion_proof, leaf_hash
    from protocol.pol.spec import BaseKind, BaseModel

    spec, data = _task_setup()
    pre = attacks.honest(spec, data)
    weights = pre.state_at(spec.steps).params
    blob = encode_weights(weights)
    leaves = pre.leaves()
    proof = inclusion_proof([leaf_hash(x) for x in leaves], len(leaves) - 1)
    base = BaseModel(BaseKind.PROVEN, weights_hash(weights), sha256(blob), pre.root(), leaves[-1], proof)
    tune = replace(spec, version=2, base=base, model_seed=77)
    return tune, data, blob, pre


def test_a_fine_tune_trains_from_its_proven_base_and_a_wrong_base_fails_verification(tmp_path: Path) -> None:
    tune, data, blob, pre = _finetune(tmp_path)
    tid = b"\x03" * 32
    net = _Network()
    submitter = _runner(tmp_path, net, "submitter", b"U" * 32)
    for b in (encode_record(tune), data.blob, blob):
        submitter.blobs.put(b)
    solver = _runner(tmp_path, net, "solver", b"S" * 32)
    verifier = _runner(tmp_path, net, "verifier", b"V" * 32)
    good = replace(_facts(tune, tid, None), base_root=pre.root(), base_checkpoints=len(pre.leaves()),
                   base_steps=tune.steps)

    async def main() -> tuple[Any, Any, Any]:
        trained = await _in_thread(solver, "train", MarketWork(good, MarketTrainJob(tid, record_hash(tune))))
        committed = replace(good, proof_root=trained.merkle_root)
        check = SegmentCheckJob(tid, trained.merkle_root, 0, 0)
        ok = await _in_thread(verifier, "verify", MarketWork(committed, check))
        # The same proof, for a task whose ledger record names another accepted base.
        wrong = replace(committed, task_id=b"\x04" * 32, base_root=b"\x09" * 32)
        recheck = SegmentCheckJob(wrong.task_id, trained.merkle_root, 0, 0)
        bad = await _in_thread(verifier, "verify", MarketWork(wrong, recheck))
        return trained, ok, bad

    trained, ok, bad = trio.run(main)
    assert trained.leaves[0].weights_hash == tune.base.weights_hash  # type: ignore[union-attr]
    assert ok.passed and ok.available
    assert not bad.passed and bad.available  # a finding: the spec's base is not the task's
