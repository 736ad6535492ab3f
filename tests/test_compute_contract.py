"""The compute contract (protocol.market.jobs), one suite, run against every implementation.

The daemon once returned a proof without its checkpoint leaves while netsim's compute
returned them, so only daemon solvers lost their disputes. Here the same tests run
against netsim's synthetic engine, node/compute's torch engine (what netsim's torch mode
runs) and the daemon's runner over blob directories and a network of fetches: what a
role needs from each job is checked on each, including a whole dispute played to one
operation that a third party re-executes, and a solver that restarted before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from protocol.market.game import agreed_digest, next_digest
from protocol.market.jobs import (
    ArbitrationJob,
    ArbitrationResult,
    AvailabilityJob,
    MarketTrainJob,
    MarketTrainResult,
    MarketWork,
    RevealJob,
    RevealResult,
    SegmentCheckJob,
    SegmentCheckResult,
    StateHashJob,
    StateHashResult,
    TaskFacts,
    conforms,
)
from protocol.pol.ops import state_hash, step_ops
from protocol.pol.spec import LossKind, OptimizerKind, OptimizerSpec, ReproProfile, TaskSpec, linear, relu
from protocol.records import encode_record, record_hash

SOLVER, VERIFIER, VALIDATOR, SUBMITTER = b"S" * 32, b"V" * 32, b"A" * 32, b"U" * 32
STEPS, K = 12, 4


def _spec(dataset_hash: bytes, n: int) -> TaskSpec:
    return TaskSpec(1, (4,), 2, (linear(4, 6), relu(), linear(6, 2)), LossKind.CROSS_ENTROPY,
                    OptimizerSpec(OptimizerKind.ADAM, 0.01), 8, STEPS, K, dataset_hash, n, 1, 2, 3,
                    ReproProfile(threads=1))


# --- the three implementations, behind one small interface ----------------------------------------


Run = Callable[[bytes, TaskFacts, Any], Any]  # (who, task facts, job) -> result


@dataclass
class Shell:
    name: str
    run: Run
    facts: TaskFacts
    restart: Callable[[bytes], None]  # a node loses its memory (not its stored blobs)


def _facts(spec: TaskSpec) -> TaskFacts:
    ops = len(step_ops(spec))
    return TaskFacts(b"\x01" * 32, record_hash(spec), SUBMITTER, SOLVER, None, STEPS, K, ops, 0)


def synthetic_shell(cheat: str | None, tmp: Path) -> Shell:
    from netsim.scenarios.market.compute import SyntheticMarketCompute, SyntheticNetwork
    from protocol.encoding import sha256

    spec = _spec(sha256(b"contract-data"), 64)
    network = SyntheticNetwork({record_hash(spec): spec})
    engines: dict[bytes, Any] = {}

    def make(who: bytes) -> Any:
        return SyntheticMarketCompute(who, network, cheat if who == SOLVER else None)

    def run(who: bytes, facts: TaskFacts, job: Any) -> Any:
        engine = engines.setdefault(who, make(who))
        return engine.run(facts, job)

    return Shell("synthetic", run, _facts(spec), lambda who: engines.pop(who, None))


def _torch_task() -> tuple[TaskSpec, Any]:
    import torch

    from node.compute import datasets

    torch.set_num_threads(1)
    data = datasets.synthetic(64, (4,), 2, 7)
    return _spec(data.digest, len(data)), data


def torch_shell(cheat: str | None, tmp: Path) -> Shell:
    from netsim.scenarios.market.compute import SharedBlobs
    from node.compute.market_engine import TorchMarketCompute

    spec, data = _torch_task()
    blobs = SharedBlobs()
    blobs.put(encode_record(spec))
    blobs.put(data.blob)
    engines: dict[bytes, Any] = {}

    def run(who: bytes, facts: TaskFacts, job: Any) -> Any:
        engine = engines.setdefault(who, TorchMarketCompute(who, blobs, cheat if who == SOLVER else None))
        return engine.run(facts, job)

    return Shell("torch", run, _facts(spec), lambda who: engines.pop(who, None))


def daemon_shell(cheat: str | None, tmp: Path) -> Shell:
    """The daemon's runner: one blob directory per node, fetches over a stand-in network
    that serves any node's directory (asked through trio, from the worker thread)."""
    import trio

    from node.daemon.blobdir import BlobDir
    from node.daemon.compute import MarketComputeRunner
    from node.transport.errors import BlobNotFound

    spec, data = _torch_task()
    dirs: dict[bytes, BlobDir] = {}
    for who in (SOLVER, VERIFIER, VALIDATOR, SUBMITTER):
        d = BlobDir(tmp / who[:1].hex())
        d.root.mkdir(parents=True, exist_ok=True)
        dirs[who] = d
    dirs[SUBMITTER].put(encode_record(spec))
    dirs[SUBMITTER].put(data.blob)

    async def fetch(digest: bytes, max_size: int, peers: Any = None) -> bytes:
        for who, d in dirs.items():
            if peers is not None and who not in peers:
                continue
            blob = d.read(digest)
            if blob is not None and len(blob) <= max_size:
                return blob
        raise BlobNotFound("nobody has it")

    runners: dict[bytes, Any] = {}

    def run(who: bytes, facts: TaskFacts, job: Any) -> Any:
        runner = runners.setdefault(who, MarketComputeRunner(dirs[who], fetch, who,
                                                             cheat=cheat if who == SOLVER else None,
                                                             fetch_backoff_s=0.0))

        async def main() -> Any:
            return await trio.to_thread.run_sync(runner, "job", MarketWork(facts, job))

        return trio.run(main)

    return Shell("daemon", run, _facts(spec), lambda who: runners.pop(who, None))


SHELLS = {"synthetic": synthetic_shell, "torch": torch_shell, "daemon": daemon_shell}


def answer(shell: Shell, who: bytes, job: Any) -> Any:
    """Run a job and hold the result to the contract."""
    result = shell.run(who, shell.facts, job)
    conforms(job, result)
    return result


def trained(shell: Shell) -> MarketTrainResult:
    result = answer(shell, SOLVER, MarketTrainJob(shell.facts.task_id, shell.facts.spec_hash))
    assert isinstance(result, MarketTrainResult)
    shell.facts = replace(shell.facts, proof_root=result.merkle_root)
    return result


def digest(shell: Shell, who: bytes, segment: int, position: int) -> bytes:
    res = answer(shell, who, StateHashJob(shell.facts.task_id, segment, position, who == SOLVER))
    assert isinstance(res, StateHashResult)
    return res.digest


def bisect(shell: Shell, segment: int) -> tuple[int, bytes]:
    """Play the ledger game's bisection over one segment, as the roles do: the defender
    first, the accuser's digest decides which half; returns (lo, defender's digest at lo+1)."""
    ops = shell.facts.ops_per_step
    lo, hi = 0, K * ops
    hi_hash = digest(shell, SOLVER, segment, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        mine = digest(shell, SOLVER, segment, mid)
        if digest(shell, VERIFIER, segment, mid) == mine:
            lo = mid
        else:
            hi, hi_hash = mid, mine
    return lo, hi_hash


def arbitrate(shell: Shell, segment: int, lo: int, defender_next: bytes) -> ArbitrationResult:
    reveal = answer(shell, SOLVER, RevealJob(shell.facts.task_id, segment, lo))
    assert isinstance(reveal, RevealResult)
    job = ArbitrationJob(shell.facts.task_id, segment, lo, reveal.weights, reveal.optimizer, reveal.prefix,
                         reveal.claimed, defender_next, 0)
    result = answer(shell, VALIDATOR, job)
    assert isinstance(result, ArbitrationResult)
    return result


@pytest.fixture(params=sorted(SHELLS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- the contract ----------------------------------------------------------------------------------


def test_a_trained_proof_carries_every_leaf_of_its_root(kind: str, tmp_path: Path) -> None:
    shell = SHELLS[kind](None, tmp_path)
    result = trained(shell)
    assert result.n_checkpoints == STEPS // K + 1 == len(result.leaves)
    assert [leaf.step for leaf in result.leaves] == [i * K for i in range(STEPS // K + 1)]


def test_an_honest_segment_passes_and_a_cheat_fails_on_every_shell(kind: str, tmp_path: Path) -> None:
    honest = SHELLS[kind](None, tmp_path / "h")
    root = trained(honest).merkle_root
    checks = [answer(honest, VERIFIER, SegmentCheckJob(honest.facts.task_id, root, s, 0)) for s in range(3)]
    assert all(isinstance(c, SegmentCheckResult) and c.passed and c.distance_ppm == 0 for c in checks)
    cheat = SHELLS[kind]("skipped_steps", tmp_path / "c")
    root = trained(cheat).merkle_root
    last = answer(cheat, VERIFIER, SegmentCheckJob(cheat.facts.task_id, root, 2, 0))
    assert isinstance(last, SegmentCheckResult) and not last.passed


def test_the_parties_agree_on_every_position_of_an_honest_segment(kind: str, tmp_path: Path) -> None:
    shell = SHELLS[kind](None, tmp_path)
    result = trained(shell)
    ops = shell.facts.ops_per_step
    start = result.leaves[1]
    assert digest(shell, SOLVER, 1, 0) == state_hash(start.weights_hash, start.optimizer_hash)
    for position in (0, 1, ops - 1, ops, 2 * ops + 3, K * ops):
        assert digest(shell, SOLVER, 1, position) == digest(shell, VERIFIER, 1, position)


def test_a_reveal_opens_its_position_and_its_claim_chains_to_the_next(kind: str, tmp_path: Path) -> None:
    shell = SHELLS[kind](None, tmp_path)
    trained(shell)
    ops = shell.facts.ops_per_step
    for position in (0, 3, ops - 1, K * ops - 1):
        reveal = answer(shell, SOLVER, RevealJob(shell.facts.task_id, 1, position))
        assert isinstance(reveal, RevealResult)
        opened = agreed_digest(reveal.weights, reveal.optimizer, reveal.prefix)
        assert opened == digest(shell, SOLVER, 1, position)
        j = position % ops
        after = next_digest(ops, j, reveal.weights, reveal.optimizer, reveal.prefix, reveal.claimed)
        assert after == digest(shell, SOLVER, 1, position + 1)


def test_an_honest_defence_is_upheld_by_a_validator_reexecuting_one_op(kind: str, tmp_path: Path) -> None:
    shell = SHELLS[kind](None, tmp_path)
    trained(shell)
    lo, hi_hash = shell.facts.ops_per_step * K - 1, digest(shell, SOLVER, 2, shell.facts.ops_per_step * K)
    verdict = arbitrate(shell, 2, lo, hi_hash)
    assert verdict.defender_right and verdict.op.startswith("STATE")
    mid = 5
    verdict = arbitrate(shell, 2, mid, digest(shell, SOLVER, 2, mid + 1))
    assert verdict.defender_right, verdict.reason


@pytest.mark.parametrize("cheat", ["skipped_steps", "noisy_weights", "bisect_inconsistent"])
def test_a_cheat_is_pinned_to_one_op_that_the_validator_refutes(kind: str, cheat: str,
                                                                tmp_path: Path) -> None:
    shell = SHELLS[kind](cheat, tmp_path)
    trained(shell)
    lo, defender_next = bisect(shell, 2)
    verdict = arbitrate(shell, 2, lo, defender_next)
    assert not verdict.defender_right, (kind, cheat, verdict)
    assert verdict.op  # the op the validator re-executed is named
    if kind != "synthetic" and verdict.op.split("[")[0] not in ("STATE", "BATCH"):
        assert verdict.flops >= 0 and verdict.seconds >= 0


def test_a_silent_bisection_cheat_gives_no_answer(kind: str, tmp_path: Path) -> None:
    shell = SHELLS[kind]("bisect_silent", tmp_path)
    trained(shell)
    assert shell.run(SOLVER, shell.facts, StateHashJob(shell.facts.task_id, 0, 1, True)) is None


def test_a_solver_that_restarted_still_defends_the_proof_it_committed(kind: str, tmp_path: Path) -> None:
    shell = SHELLS[kind](None, tmp_path)
    trained(shell)
    before = [digest(shell, SOLVER, 1, p) for p in (0, 7, 11)]
    shell.restart(SOLVER)
    assert [digest(shell, SOLVER, 1, p) for p in (0, 7, 11)] == before
    verdict = arbitrate(shell, 1, 7, digest(shell, SOLVER, 1, 8))
    assert verdict.defender_right, verdict.reason


def test_a_segment_nobody_serves_is_reported_unavailable_not_failed(kind: str, tmp_path: Path) -> None:
    shell = SHELLS[kind](None, tmp_path)
    trained(shell)
    ghost = b"\x0e" * 32  # a proof root nobody published
    check = answer(shell, VERIFIER, SegmentCheckJob(shell.facts.task_id, ghost, 1, 0))
    assert isinstance(check, SegmentCheckResult) and not check.passed and not check.available


def test_a_validator_finds_a_served_segment_available_and_a_ghost_one_not(kind: str, tmp_path: Path) -> None:
    shell = SHELLS[kind](None, tmp_path)
    root = trained(shell).merkle_root
    served = answer(shell, VALIDATOR, AvailabilityJob(shell.facts.task_id, root, 1))
    ghost = answer(shell, VALIDATOR, AvailabilityJob(shell.facts.task_id, b"\x0e" * 32, 1))
    assert isinstance(served, ArbitrationResult) and served.defender_right
    assert isinstance(ghost, ArbitrationResult) and not ghost.defender_right


def test_only_the_solver_answers_as_defender(kind: str, tmp_path: Path) -> None:
    shell = SHELLS[kind](None, tmp_path)
    trained(shell)
    assert shell.run(VERIFIER, shell.facts, StateHashJob(shell.facts.task_id, 0, 1, True)) is None
    assert shell.run(VERIFIER, shell.facts, RevealJob(shell.facts.task_id, 0, 1)) is None
