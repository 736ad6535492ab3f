"""Real workloads on torch: transformers, CNNs, text, fine-tuning.

Pinned here: the fast training path equals the op-by-op trace checkpoint for checkpoint;
every op of a step re-executed alone by the referee equals its value inside the step;
shapes, FLOPs and memory of random specs against torch's own count; text and image
datasets; fine-tuning from a base that verification checks; sampling and evaluation.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from node.compute import attacks, datasets, lm, repro
from node.compute.checkpoints import decode_weights, encode_weights, load_base, weights_hash
from node.compute.dispute import challenger_run, dispute_segment
from node.compute.fast import step as fast_step
from node.compute.ops import batch, graph_of, node_forward
from node.compute.plots import write_loss_curve
from node.compute.profiling import Device, cross_device_profile, profile
from node.compute.tensors import TensorStore, blob_id
from node.compute.trace import TorchSource, referee
from node.compute.trainer import Run, State, base_state, initial_state, run_step
from node.compute.verify import base_matches, initial_matches, verify_proof
from protocol.errors import BlobError, ConfigError, SpecError
from protocol.pol.graph import INPUT, node_shapes
from protocol.pol.jobs import RefereeJob
from protocol.pol.memory import SCRATCH_BYTES, tensor_bytes
from protocol.pol.merkle import inclusion_proof, leaf_hash
from protocol.pol.messages import OpOutputs
from protocol.pol.ops import START, OpKind, op_digest, step_ops
from protocol.pol.pinpoint import Outcome
from protocol.pol.sampling import op_tolerance
from protocol.pol.spec import (
    SPEC_VERSION,
    BaseKind,
    BaseModel,
    DeviceClass,
    LossKind,
    OptimizerKind,
    OptimizerSpec,
    ReproProfile,
    TaskSpec,
    attention,
    avgpool2d,
    conv2d,
    dropout,
    embedding,
    flatten,
    gelu,
    gelu_mlp,
    infer_shapes,
    layernorm,
    linear,
    lm_head,
    maxpool2d,
    pos_embedding,
    relu,
    residual,
    transformer_layers,
    validate_spec,
)

torch.set_num_threads(1)
TEXT = datasets.text(("The quick brown fox jumps over the lazy dog. " * 40 + "Ünïcödé ✓\n").encode())
IMAGES = datasets.digit_images()
ADAMW = OptimizerSpec(OptimizerKind.ADAMW, 3e-3, weight_decay=0.01)


def tiny_lm(tied: bool = True, **kw: Any) -> TaskSpec:
    spec = TaskSpec(
        SPEC_VERSION,
        (12,),
        256,
        transformer_layers(256, 12, 16, 2, 2, hidden=24, tied=tied),
        LossKind.NEXT_TOKEN,
        ADAMW,
        4,
        16,
        4,
        TEXT.digest,
        len(TEXT),
        1,
        2,
        3,
        ReproProfile(),
        val_size=200,
    )
    return replace(spec, **kw)


def tiny_cnn(**kw: Any) -> TaskSpec:
    layers = (
        conv2d(1, 4, 3, padding=1),
        relu(),
        maxpool2d(2),
        dropout(0.2),
        conv2d(4, 6, 3, padding=1),
        gelu(),
        avgpool2d(2),
        flatten(),
        linear(24, 10),
    )
    spec = TaskSpec(
        SPEC_VERSION,
        (1, 8, 8),
        10,
        layers,
        LossKind.CROSS_ENTROPY,
        OptimizerSpec(OptimizerKind.ADAM, 1e-2),
        16,
        16,
        4,
        IMAGES.digest,
        len(IMAGES),
        1,
        2,
        3,
        ReproProfile(),
        val_size=97,
    )
    return replace(spec, **kw)


def per_op_rule(spec: TaskSpec, data: Any, state: State, step: int) -> State:
    """A step replayed op by op (as the pinpoint game's trace does)."""
    return run_step(spec, data, state, step, lambda j, t, o: None)


def standalone_layers_lm() -> TaskSpec:
    layers = (
        embedding(256, 16),
        pos_embedding(12, 16),
        layernorm(16),
        attention(16, 4),
        gelu_mlp(16, 20),
        layernorm(16),
        linear(16, 16),
        lm_head(16, 256),
    )
    return tiny_lm(layers=layers, optimizer=OptimizerSpec(OptimizerKind.SGD, 0.05, momentum=0.9))


def v1_every_layer() -> tuple[TaskSpec, datasets.Dataset]:
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
    spec = TaskSpec(
        1,
        (1, 4, 4),
        3,
        layers,
        LossKind.MSE,
        OptimizerSpec(OptimizerKind.ADAM, 0.01),
        8,
        8,
        2,
        data.digest,
        64,
        4,
        5,
        6,
        ReproProfile(),
    )
    return spec, data


CASES = {
    "lm-tied": (tiny_lm(), TEXT),
    "lm-untied": (tiny_lm(tied=False), TEXT),
    "lm-standalone-layers-sgd": (standalone_layers_lm(), TEXT),
    "cnn-pools-dropout": (tiny_cnn(), IMAGES),
    "v1-every-layer": v1_every_layer(),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fast_training_equals_the_op_by_op_trace_at_every_checkpoint(case: str) -> None:
    spec, data = CASES[case]
    fast, slow = Run(spec, data), Run(spec, data, step_rule=per_op_rule)
    fast.train()
    slow.train()
    assert fast.leaves() == slow.leaves()
    assert all(fast.losses[t] == slow.losses[t] for t in range(spec.steps))  # the same loss bits too


@pytest.mark.parametrize("case", ["lm-tied", "cnn-pools-dropout"])
def test_each_op_re_executed_alone_by_the_referee_equals_its_value_in_the_full_step(case: str) -> None:
    spec, data = CASES[case]
    run = Run(spec, data)
    store = TensorStore()
    src = TorchSource(run, store)
    step = 5
    trace = src.step_trace(step)
    weights, opt = src.state_digests(step)
    start = (*weights, *opt)
    ops = step_ops(spec)
    kinds = set()
    for j, op in enumerate(ops):
        inputs = tuple(start[r.slot] if r.op == START else trace[r.op][r.slot] for r in op.inputs)
        job = RefereeJob(b"\x01" * 32, spec, step, j, inputs, OpOutputs(trace[j]), OpOutputs(trace[j]), 0.0)
        res = referee(job, data, store)
        assert res.defender_ok and res.defender_distance == 0.0, f"op {j} {op.kind.name} {op.index}"
        assert res.recomputed == op_digest(trace[j])
        kinds.add(op.kind if op.kind is not OpKind.FORWARD else graph_of(spec)[op.index].prim)
    # the trace ends in the state the fast path reaches
    assert run.state_at(step + 1).leaf(0, 0).weights_hash == trace[-1][0]
    assert len(kinds) >= 8


def test_a_wrong_op_output_is_refuted_by_the_referee() -> None:
    spec, data = CASES["lm-tied"]
    run = Run(spec, data)
    store = TensorStore()
    src = TorchSource(run, store)
    trace = src.step_trace(2)
    weights, opt = src.state_digests(2)
    start = (*weights, *opt)
    ops = step_ops(spec)
    scores = next(j for j, op in enumerate(ops) if op.kind is OpKind.BACKWARD and op.index == 4)
    op = ops[scores]
    inputs = tuple(start[r.slot] if r.op == START else trace[r.op][r.slot] for r in op.inputs)
    tensors = [store.get(d) for d in trace[scores]]
    forged = tuple(store.put(t * 1.001) for t in tensors)
    job = RefereeJob(b"\x02" * 32, spec, 2, scores, inputs, OpOutputs(forged), OpOutputs(trace[scores]), 0.0)
    res = referee(job, data, store)
    assert not res.defender_ok and res.challenger_ok


# --- shapes, FLOPs and memory against torch --------------------------------------------------------


@st.composite
def lm_specs(draw: st.DrawFn) -> TaskSpec:
    heads = draw(st.integers(1, 3))
    width = heads * draw(st.integers(1, 6))
    t = draw(st.integers(1, 12))
    blocks = draw(st.integers(0, 2))
    hidden = draw(st.integers(1, 24))
    tied = draw(st.booleans())
    layers = transformer_layers(256, t + draw(st.integers(0, 3)), width, heads, blocks, hidden, tied)
    if draw(st.booleans()):
        layers = (*layers[:2], attention(width, heads), gelu_mlp(width, hidden), *layers[2:])
    return tiny_lm(input_shape=(t,), layers=layers, batch_size=draw(st.integers(1, 4)), val_size=0)


@st.composite
def cnn_specs(draw: st.DrawFn) -> TaskSpec:
    c1, c2 = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    k = draw(st.integers(1, 3))
    pool = draw(st.sampled_from([maxpool2d, avgpool2d]))
    pk = draw(st.integers(1, 3))
    layers = [
        conv2d(1, c1, k, padding=draw(st.integers(0, k - 1))),
        relu(),
        pool(pk, draw(st.integers(1, 2))),
    ]
    layers += [conv2d(c1, c2, 1), gelu(), flatten()]
    spec = tiny_cnn(batch_size=draw(st.integers(1, 8)))
    flat = math.prod(infer_shapes(replace(spec, layers=tuple(layers)))[-1])
    return replace(spec, layers=(*layers, linear(flat, 10)))


def _batch(spec: TaskSpec) -> tuple[torch.Tensor, torch.Tensor]:
    data = TEXT if spec.is_token_model else IMAGES
    return batch(spec, data, 0)


def _forward_all(
    spec: TaskSpec, params: list[torch.Tensor], x: torch.Tensor
) -> list[tuple[torch.Tensor, ...]]:
    outs: list[tuple[torch.Tensor, ...]] = []
    for node in graph_of(spec):
        ins = [x if r.node == INPUT else outs[r.node][r.slot] for r in node.inputs]
        outs.append(node_forward(spec, node, 0, ins, [params[j] for j in node.params]))
    return outs


def check_shapes_and_flops(spec: TaskSpec) -> None:
    from protocol.pol.flops import node_flops

    validate_spec(spec)
    params = initial_state(spec).params
    x, _ = _batch(spec)
    with FlopCounterMode(display=False) as counter:
        outs = _forward_all(spec, params, x)
    for got, want in zip(outs, node_shapes(spec), strict=True):
        assert [tuple(t.shape[1:]) for t in got] == list(want)
    matmul = sum(m for m, _ in node_flops(spec))
    assert counter.get_total_flops() == spec.batch_size * matmul  # forward: exactly torch's count


class PeakTensorBytes(TorchDispatchMode):
    """Live bytes of every tensor storage torch allocates inside the mode, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                s = t.untyped_storage()
                key = s.data_ptr()
                if s.nbytes() and key not in self.live:
                    self.live[key] = s.nbytes()
                    self.now += s.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(s, self._free, key)
        return out


def check_memory(spec: TaskSpec) -> None:
    data = TEXT if spec.is_token_model else IMAGES
    state = initial_state(spec)
    held = sum(t.numel() * t.element_size() for t in (*state.params, *state.opt))
    with PeakTensorBytes() as mode:
        fast_step(spec, data, state.params, state.opt, 0)
    data_bytes = len(data) if spec.is_token_model else data.x.numel() * 4 + data.y.numel() * 8
    measured = held + mode.peak + data_bytes
    estimate = tensor_bytes(spec)
    assert measured <= estimate, (measured, estimate)
    assert estimate <= 4 * measured + 2 * SCRATCH_BYTES, (measured, estimate)  # a bound, not a wild one


def check_gradients_between_nodes_are_contiguous(spec: TaskSpec) -> None:
    """What makes the fast path equal the replay: the gradient autograd hands each node's
    backward has the layout the replay's (fetched, contiguous) gradient has."""
    data = TEXT if spec.is_token_model else IMAGES
    state = initial_state(spec)
    bad: list[int] = []

    def probe(node: int, t: torch.Tensor) -> None:
        t.register_hook(lambda g, node=node: bad.append(node) if not g.is_contiguous() else None)

    fast_step(spec, data, state.params, state.opt, 0, probe=probe)
    assert not bad, f"non-contiguous gradients reach nodes {bad}"


@settings(max_examples=25, deadline=None)
@given(spec=lm_specs())
def test_random_language_models_match_torch_in_shape_flops_and_memory(spec: TaskSpec) -> None:
    check_shapes_and_flops(spec)
    check_memory(spec)
    check_gradients_between_nodes_are_contiguous(spec)


@settings(max_examples=25, deadline=None)
@given(spec=cnn_specs())
def test_random_cnns_match_torch_in_shape_flops_and_memory(spec: TaskSpec) -> None:
    check_shapes_and_flops(spec)
    check_memory(spec)
    check_gradients_between_nodes_are_contiguous(spec)


def test_the_backward_costs_at_most_twice_the_forward_in_torchs_count() -> None:
    from protocol.pol.flops import node_flops

    spec = tiny_lm()
    state = initial_state(spec)
    with FlopCounterMode(display=False) as counter:
        fast_step(spec, TEXT, state.params, state.opt, 0)
    fwd = spec.batch_size * sum(m for m, _ in node_flops(spec))
    assert 2 * fwd <= counter.get_total_flops() <= 3 * fwd


# --- datasets -----------------------------------------------------------------------------------


def test_any_utf8_text_becomes_a_content_addressed_byte_token_blob(tmp_path: Path) -> None:
    raw = "naïve café\n".encode()
    a, b = datasets.text(raw), datasets.text(raw)
    assert a.digest == b.digest == blob_id(a.blob) and len(a) == len(raw)
    assert bytes(a.tokens.tolist()) == raw
    loaded = datasets.load(a.blob, a.digest, (4,))
    assert isinstance(loaded, datasets.TextDataset) and torch.equal(loaded.tokens, a.tokens)
    with pytest.raises(BlobError, match="not UTF-8"):
        datasets.text(b"\xff\xfe bad")
    with pytest.raises(BlobError, match="must hold"):
        datasets.text(b"")
    with pytest.raises(BlobError, match="do not fill one context"):
        datasets.load(a.blob, a.digest, (64,))
    with pytest.raises(BlobError, match="content hash"):
        datasets.load(a.blob, b"\x00" * 32, (4,))


def test_the_built_in_corpus_is_pythons_own_documentation() -> None:
    corpus = datasets.corpus()
    assert 300_000 < len(corpus) < 2_000_000
    assert corpus.digest == datasets.corpus().digest
    assert 4.0 < datasets.unigram_bits_per_byte(corpus.tokens) < 5.5
    assert b"lambda" in bytes(corpus.tokens[:200_000].tolist())


def test_load_for_checks_the_dataset_against_the_whole_spec() -> None:
    spec = tiny_lm()
    assert isinstance(datasets.load_for(spec, TEXT.blob), datasets.TextDataset)
    with pytest.raises(BlobError, match="the spec says"):
        datasets.load_for(replace(spec, dataset_size=len(TEXT) - 1), TEXT.blob)
    small_vocab = tiny_lm(num_classes=128, layers=transformer_layers(128, 12, 16, 2, 1))
    with pytest.raises(BlobError, match="outside the spec's vocabulary"):
        datasets.load_for(small_vocab, TEXT.blob)  # the text holds non-ASCII bytes
    with pytest.raises(BlobError):
        datasets.load_for(replace(tiny_cnn(), dataset_hash=TEXT.digest), TEXT.blob)


def test_digit_images_are_1x8x8_and_the_held_out_split_is_never_trained_on() -> None:
    assert tuple(IMAGES.x.shape[1:]) == (1, 8, 8) and len(IMAGES) == 1797
    spec = tiny_cnn(batch_size=64)
    seen = set()
    for step in range(50):
        x, _ = batch(spec, IMAGES, step)
        seen.update(int(i) for i in (x.flatten(1) @ torch.arange(64.0)).round())
    held = {int(i) for i in (IMAGES.x[spec.train_size :].flatten(1) @ torch.arange(64.0)).round()}
    train = {int(i) for i in (IMAGES.x[: spec.train_size].flatten(1) @ torch.arange(64.0)).round()}
    assert seen <= train and held - train  # batches come from the training part only
    raw = "".join(f"{i:06d}\n" for i in range(400)).encode()  # every 12-byte window is unique
    counter = datasets.text(raw)
    lm_spec = tiny_lm(dataset_hash=counter.digest, dataset_size=len(raw), val_size=700)
    for step in range(50):
        x, y = batch(lm_spec, counter, step)
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one byte
        for row in x:
            start = raw.find(bytes(row.tolist()))
            assert start >= 0 and start + 12 + 1 <= lm_spec.train_size  # the target byte too


# --- fine-tuning ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained() -> Run:
    run = Run(tiny_lm(), TEXT)
    run.train()
    return run


def finetune_spec(pre: Run, proven: bool) -> tuple[TaskSpec, bytes]:
    weights = pre.state_at(pre.spec.steps).params
    blob = encode_weights(weights)
    if not proven:
        base = BaseModel(BaseKind.UPLOADED, weights_hash(weights), blob_id(blob))
    else:
        leaves = pre.leaves()
        proof = inclusion_proof([leaf_hash(x) for x in leaves], len(leaves) - 1)
        base = BaseModel(
            BaseKind.PROVEN, leaves[-1].weights_hash, blob_id(blob), pre.root(), leaves[-1], proof
        )
    other = datasets.text(b"fine tuning text, another corpus. " * 40)
    spec = replace(pre.spec, base=base, dataset_hash=other.digest, dataset_size=len(other), model_seed=99)
    validate_spec(spec)
    return spec, blob


@pytest.mark.parametrize("proven", [False, True], ids=["uploaded", "proven"])
def test_a_fine_tune_whose_checkpoint_0_is_not_its_base_is_rejected(pretrained: Run, proven: bool) -> None:
    spec, blob = finetune_spec(pretrained, proven)
    data = datasets.text(b"fine tuning text, another corpus. " * 40)
    start = load_base(spec, blob)
    assert base_matches(spec, start) and initial_matches(spec, start)
    good = Run(spec, data, states={0: start})
    good.train()

    def fetch(r: Run) -> Any:
        return lambda i: r.state_at(i * spec.checkpoint_interval)

    assert verify_proof(spec, data, good.leaves(), fetch(good), b"\x00" * 32, 0.0).passed
    # a solver that trains from scratch (the seeded init) instead of the named base
    scratch = initial_state(replace(spec, base=None))
    cheat = Run(spec, data, states={0: State(scratch.params, scratch.opt)})
    cheat.train()
    verdict = verify_proof(spec, data, cheat.leaves(), fetch(cheat), b"\x00" * 32, 0.0)
    assert not verdict.passed and not verdict.initial_ok
    # the base's weights with a non-zero optimizer state are not a fresh fine-tune either
    warm = State(start.params, [o + 1e-3 for o in start.opt])
    assert not initial_matches(spec, warm)


def test_a_base_blob_must_hash_and_shape_to_the_spec(pretrained: Run) -> None:
    spec, blob = finetune_spec(pretrained, proven=False)
    with pytest.raises(BlobError, match="blob hash"):
        load_base(spec, blob + b" ")
    weights = decode_weights(spec, blob)
    with pytest.raises(BlobError, match="do not hash"):
        base_state(spec, [w * 2 for w in weights])
    with pytest.raises(SpecError, match="base weights"):
        initial_state(spec)
    with pytest.raises(BlobError, match="parameters"):
        decode_weights(tiny_lm(tied=False), blob)  # an untied head has one tensor more


# --- language-model pieces ---------------------------------------------------------------------


def test_sampling_is_seeded_and_evaluation_reports_bits_per_byte(pretrained: Run, tmp_path: Path) -> None:
    spec, state = pretrained.spec, pretrained.state_at(pretrained.spec.steps)
    a = lm.sample(spec, state, "The quick", 30, seed=3)
    assert a == lm.sample(spec, state, "The quick", 30, seed=3) and a.startswith("The quick")
    assert a != lm.sample(spec, state, "The quick", 30, seed=4)
    report = lm.evaluate(spec, TEXT, state)
    untrained = lm.evaluate(spec, TEXT, pretrained.state_at(0))
    assert report.val_bits_per_byte < untrained.val_bits_per_byte
    assert math.isclose(untrained.val_bits_per_byte, 8.0, rel_tol=0.05)  # uniform over 256 bytes
    with pytest.raises(ConfigError, match="n_bytes"):
        lm.sample(spec, state, "x", 10**6)
    png = write_loss_curve(
        tmp_path / "loss.png", pretrained.losses, {16: report.val_bits_per_byte}, reference=4.0
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_ready_made_character_transformer_is_the_one_the_issue_names() -> None:
    corpus = datasets.corpus()
    spec = lm.char_transformer_spec(corpus)
    blocks = [layer for layer in spec.layers if layer.kind.name == "TRANSFORMER_BLOCK"]
    assert len(blocks) == 4 and blocks[0].in_size == 128 and spec.input_shape == (128,)
    assert spec.val_size > 0 and spec.num_segments >= 64
    assert spec.layers[-1].kind.name == "LM_HEAD_TIED"


@pytest.mark.parametrize("attack", attacks.CATALOG, ids=lambda a: a.name)
def test_every_attack_is_caught_on_a_language_model(attack: attacks.Attack) -> None:
    spec = tiny_lm(steps=16, checkpoint_interval=2)
    thr = profile(spec, TEXT, stretch_steps=2, thread_counts=(2,)).threshold
    run = attack.build(spec, TEXT, 0)
    fetch = lambda i: run.state_at(i * spec.checkpoint_interval)  # noqa: E731
    for seed in (b"\x00" * 32, b"\x05" * 32):
        assert verify_proof(spec, TEXT, run.leaves(), fetch, seed, thr).passed is attack.honest
    last = spec.num_segments - 1
    verifier = challenger_run(spec, TEXT, run, last)
    if attack.honest or not initial_matches(spec, run.state_at(0)):
        return
    rep = dispute_segment(spec, TEXT, run, verifier, last, tolerance=op_tolerance(thr))
    assert rep.outcome is Outcome.CHALLENGER_WINS and rep.rounds <= rep.bound


# --- reproducibility profiles ----------------------------------------------------------------------


def test_the_cuda_profile_pins_deterministic_kernels_and_the_cublas_workspace() -> None:
    spec = replace(tiny_lm(), profile=ReproProfile(device=DeviceClass.CUDA))
    s = repro.settings(spec)
    assert s.device == "cuda" and s.deterministic and s.cudnn_deterministic and not s.cudnn_benchmark
    assert ("CUBLAS_WORKSPACE_CONFIG", repro.CUBLAS_WORKSPACE_CONFIG) in s.env and not s.allow_tf32
    assert repro.settings(tiny_lm()).env == ()  # CPU needs no environment
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="CUDA"):
            repro.apply(spec)


def test_a_verifier_on_another_device_gets_a_threshold_from_profiling_both() -> None:
    spec = tiny_lm(steps=8, checkpoint_interval=2)
    same = cross_device_profile(spec, TEXT, 2, Device("cpu", 1), Device("cpu", 1))
    assert same.threshold == 0.0 and max(same.noise) == 0.0
    other = cross_device_profile(spec, TEXT, 2, Device("cpu", 1), Device("cpu", 2))
    solver = Run(spec, TEXT, threads=1)
    verifier = Run(spec, TEXT, threads=2)
    identical = solver.state_at(2).leaf(0, 0) == verifier.state_at(2).leaf(0, 0)
    assert (other.threshold == 0.0) == identical
    assert min(other.signal) > 10 * other.threshold


@pytest.mark.parametrize(
    "t",
    [
        torch.randn(3, 4),
        torch.randn(5).double(),
        torch.arange(7),
        torch.zeros(0, 3),
        torch.randn(4, 6).t(),
        torch.tensor(2.5),
        torch.arange(9, dtype=torch.uint8),
        torch.ones(2, 3, dtype=torch.int32),
    ],
    ids=["f32", "f64", "i64", "empty", "transposed", "scalar", "u8", "i32"],
)
def test_the_streamed_digest_is_the_protocols_tensor_digest(t: torch.Tensor) -> None:
    from node.compute.tensors import digest
    from protocol.pol.ops import tensor_digest

    arr = t.contiguous().numpy()
    want = tensor_digest(str(arr.dtype), tuple(arr.shape), arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    assert digest(t) == want
