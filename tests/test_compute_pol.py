"""Torch side of proof of learning: training, blobs, verification, attacks, pinpoint, referee."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from node.compute import attacks, datasets
from node.compute.checkpoints import decode_checkpoint, encode_checkpoint
from node.compute.dispute import challenger_run, dispute_segment
from node.compute.profiling import profile
from node.compute.tensors import TensorStore, decode_blob, encode_blob
from node.compute.trace import TorchSource
from node.compute.trainer import Run, accuracy
from node.compute.verify import verify_proof
from protocol.errors import BlobError
from protocol.pol.oracle import HonestOracle
from protocol.pol.pinpoint import Outcome
from protocol.pol.sampling import op_tolerance
from protocol.pol.spec import (
    LossKind,
    OptimizerKind,
    OptimizerSpec,
    ReproProfile,
    TaskSpec,
    conv2d,
    dropout,
    flatten,
    gelu,
    layernorm,
    linear,
    relu,
    residual,
)

torch.set_num_threads(1)
DATA = datasets.digits()


def spec(**kw: object) -> TaskSpec:
    base = TaskSpec(
        1,
        (64,),
        10,
        (linear(64, 16), relu(), linear(16, 10)),
        LossKind.CROSS_ENTROPY,
        OptimizerSpec(OptimizerKind.ADAM, 0.01),
        16,
        16,
        4,
        DATA.digest,
        len(DATA),
        1,
        2,
        3,
        ReproProfile(threads=1),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


SPEC = spec()


@pytest.fixture(scope="module")
def honest() -> Run:
    return attacks.honest(SPEC, DATA)


def test_training_is_bit_reproducible_under_the_profile_and_learns(honest: Run) -> None:
    again = Run(SPEC, DATA)
    again.train()
    assert again.root() == honest.root()
    longer = Run(spec(steps=120, checkpoint_interval=40), DATA)
    longer.train()
    assert accuracy(longer.spec, DATA, longer.state_at(120)) > 0.8


@pytest.mark.parametrize(
    "opt",
    [
        OptimizerSpec(OptimizerKind.SGD, 0.1, momentum=0.9, weight_decay=1e-4),
        OptimizerSpec(OptimizerKind.ADAMW, 0.01, weight_decay=0.01),
    ],
)
def test_every_layer_and_optimizer_trains_and_replays_from_a_checkpoint(opt: OptimizerSpec) -> None:
    data = datasets.synthetic(64, (1, 4, 4), 3, seed=5)
    layers = (
        conv2d(1, 2, 3, padding=1),
        gelu(),
        flatten(),
        layernorm(32),
        dropout(0.25),
        linear(32, 6),
        residual(6, 5),
        relu(),
        linear(6, 3),
    )
    s = TaskSpec(
        1, (1, 4, 4), 3, layers, LossKind.MSE, opt, 8, 4, 2, data.digest, 64, 4, 5, 6, ReproProfile()
    )
    full = Run(s, data)
    full.train()
    resumed = Run(s, data, states={0: full.states[0], 2: full.states[2]})
    assert resumed.state_at(4).leaf(4, 5) == full.state_at(4).leaf(4, 5)


def test_dataset_generator_and_digits_are_content_addressed() -> None:
    a, b = datasets.synthetic(32, (4,), 2, seed=1), datasets.synthetic(32, (4,), 2, seed=1)
    assert a.digest == b.digest != datasets.synthetic(32, (4,), 2, seed=2).digest
    assert datasets.load(DATA.blob, DATA.digest, (64,)).digest == DATA.digest
    with pytest.raises(BlobError, match="content hash"):
        datasets.load(a.blob, DATA.digest, (4,))
    with pytest.raises(BlobError, match="input"):
        datasets.load(a.blob, a.digest, (5,))


def test_bad_checkpoint_blobs_give_clear_errors(honest: Run) -> None:
    state, leaf = honest.states[4], honest.leaves()[1]
    blob = encode_checkpoint(state)
    assert decode_checkpoint(SPEC, blob, leaf).leaf(4, SPEC.data_seed) == leaf
    with pytest.raises(BlobError, match="do not match the leaf"):
        decode_checkpoint(SPEC, blob, honest.leaves()[2])
    with pytest.raises(BlobError, match="safetensors"):
        decode_checkpoint(SPEC, blob[: len(blob) // 2], leaf)
    wrong_shape = encode_blob(
        {**{f"w.{i:04d}": p for i, p in enumerate(state.params)}, "w.0000": torch.zeros(3)}
    )
    with pytest.raises(BlobError, match="expected"):
        decode_checkpoint(SPEC, wrong_shape, leaf)
    wrong_dtype = encode_blob({f"w.{i:04d}": p.double() for i, p in enumerate(state.params)})
    with pytest.raises(BlobError):
        decode_checkpoint(SPEC, wrong_dtype, leaf)
    with pytest.raises(BlobError, match="exceeds"):
        decode_blob(blob, max_bytes=len(blob) - 1)
    with pytest.raises(BlobError, match="dtype"):
        decode_blob(encode_blob({"x": torch.zeros(2, dtype=torch.int8)}))


def test_tensor_store_refuses_poisoned_entries() -> None:
    store = TensorStore()
    d = store.put(torch.ones(3))
    store._items[d] = torch.zeros(3)  # a peer served the wrong bytes under this digest
    with pytest.raises(BlobError, match="does not match"):
        store.get(d)


def fetcher(run: Run):  # type: ignore[no-untyped-def]
    return lambda i: run.state_at(i * SPEC.checkpoint_interval)


@pytest.fixture(scope="module")
def threshold() -> float:
    """The task's threshold as the network sets it: profiled across thread counts."""
    return profile(SPEC, DATA, stretch_steps=4, thread_counts=(2,)).threshold


@pytest.mark.parametrize("attack", attacks.CATALOG, ids=lambda a: a.name)
def test_every_attack_is_caught_and_the_honest_outlier_is_not(
    attack: attacks.Attack, threshold: float
) -> None:
    run = attack.build(SPEC, DATA, 0)
    for seed in (b"\x00" * 32, b"\x07" * 32):
        verdict = verify_proof(SPEC, DATA, run.leaves(), fetcher(run), seed, threshold=threshold)
        assert verdict.passed is attack.honest
    last = SPEC.num_segments - 1
    verifier = challenger_run(SPEC, DATA, run, last)
    if attack.honest or not verdict.initial_ok:
        return  # honest: no dispute; copied: refuted by the initial-weights check, no segment to bisect
    report = dispute_segment(SPEC, DATA, run, verifier, last, tolerance=op_tolerance(threshold))
    assert report.outcome is Outcome.CHALLENGER_WINS
    assert report.rounds <= report.bound and report.referee_calls <= 1


def test_honest_solver_wins_against_a_false_challenger(honest: Run) -> None:
    liar = attacks.noisy(SPEC, DATA)
    report = dispute_segment(SPEC, DATA, honest, liar, SPEC.num_segments - 1, tolerance=0.0)
    assert report.outcome is Outcome.DEFENDER_WINS and report.rounds <= report.bound


def test_inconsistent_or_silent_bisection_loses(honest: Run) -> None:
    cheat = attacks.skipped_steps(SPEC, DATA)
    last = SPEC.num_segments - 1
    verifier = challenger_run(SPEC, DATA, cheat, last)
    store = TensorStore()
    inconsistent = attacks.InconsistentOracle(HonestOracle(TorchSource(cheat, store)))
    rep = dispute_segment(SPEC, DATA, cheat, verifier, last, 0.0, defender_oracle=inconsistent)
    assert rep.outcome is Outcome.CHALLENGER_WINS and "inconsistent" in rep.reason
    rep = dispute_segment(SPEC, DATA, cheat, verifier, last, 0.0, defender_oracle=attacks.SilentOracle())
    assert rep.outcome is Outcome.CHALLENGER_WINS and "silent" in rep.reason


def test_referee_tolerance_lets_an_honest_thread_difference_win() -> None:
    # A different thread count may change float bits; with a profiled threshold the op
    # tolerance absorbs it, while a cheat's op output is orders of magnitude off.
    run = attacks.honest(SPEC, DATA)
    other = Run(SPEC, DATA, threads=2, states={0: run.states[0], 12: run.states[12]})
    perturbed = Run(SPEC, DATA, states={0: run.states[0], 12: run.states[12]})
    end = perturbed.state_at(16)
    perturbed.states[16] = type(end)([p * (1 + 1e-7) for p in end.params], end.opt)
    for challenger in (other, perturbed):
        if challenger.state_at(16).leaf(0, 0) == run.state_at(16).leaf(0, 0):
            continue
        rep = dispute_segment(SPEC, DATA, run, challenger, 3, tolerance=1e-4)
        assert rep.outcome is Outcome.DEFENDER_WINS


def test_profiling_sets_zero_threshold_when_reruns_are_bit_identical() -> None:
    res = profile(SPEC, DATA, stretch_steps=4, thread_counts=(1,))
    assert res.threshold == 0.0 and max(res.noise) == 0.0 and min(res.signal) > 0.1
