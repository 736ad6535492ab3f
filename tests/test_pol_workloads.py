"""Spec version 2 in the pure core: transformer and pooling layers, their op dataflow,
FLOPs and memory; fine-tuning bases; and version-1 specs keeping their encoding."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.errors import NonCanonical, SpecError
from protocol.pol import flops
from protocol.pol.graph import Prim, nodes, plan
from protocol.pol.memory import RUNTIME_OVERHEAD_MB, peak_memory_mb, tensor_bytes
from protocol.pol.merkle import CheckpointLeaf, inclusion_proof, leaf_hash, merkle_root
from protocol.pol.ops import START, OpKind, ops_per_step, step_ops
from protocol.pol.spec import (
    SPEC_V1,
    SPEC_VERSION,
    BaseKind,
    BaseModel,
    Layer,
    LayerKind,
    LossKind,
    OptimizerKind,
    OptimizerSpec,
    ReproProfile,
    TaskSpec,
    attention,
    avgpool2d,
    conv2d,
    embedding,
    flatten,
    gelu_mlp,
    is_final_checkpoint,
    layernorm,
    linear,
    lm_head,
    maxpool2d,
    pos_embedding,
    relu,
    transformer_block,
    transformer_layers,
    validate_spec,
)
from protocol.records import decode_record, encode_record, record_hash
from protocol.schema import to_wire

DATA = b"\x01" * 32


def lm(**kw: object) -> TaskSpec:
    base = TaskSpec(
        SPEC_VERSION,
        (16,),
        64,
        transformer_layers(64, 16, 32, 4, 2, tied=True),
        LossKind.NEXT_TOKEN,
        OptimizerSpec(OptimizerKind.ADAMW, 1e-3, weight_decay=0.01),
        4,
        8,
        2,
        DATA,
        1000,
        1,
        2,
        3,
        ReproProfile(),
        val_size=100,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def cnn(**kw: object) -> TaskSpec:
    layers = (
        conv2d(1, 4, 3, padding=1),
        relu(),
        maxpool2d(2),
        conv2d(4, 8, 3, padding=1),
        relu(),
        avgpool2d(2),
        flatten(),
        linear(32, 10),
    )
    base = TaskSpec(
        SPEC_VERSION,
        (1, 8, 8),
        10,
        layers,
        LossKind.CROSS_ENTROPY,
        OptimizerSpec(OptimizerKind.ADAM, 1e-3),
        8,
        8,
        2,
        DATA,
        100,
        1,
        2,
        3,
        ReproProfile(),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def v1_mlp() -> TaskSpec:
    return TaskSpec(
        SPEC_V1,
        (8,),
        3,
        (linear(8, 4), relu(), linear(4, 3)),
        LossKind.CROSS_ENTROPY,
        OptimizerSpec(OptimizerKind.SGD, 0.1, momentum=0.9),
        4,
        8,
        2,
        DATA,
        64,
        1,
        2,
        3,
        ReproProfile(),
    )


# --- versions and encodings ---------------------------------------------------------------------


def test_a_version_1_spec_keeps_its_old_encoding_and_hash() -> None:
    spec = v1_mlp()
    wire = to_wire(spec)
    # the version-1 layout: 15 fields, layers of 7 fields (the new trailing fields left off)
    assert len(wire) == 15 and all(len(layer) == 7 for layer in wire[3])
    old = encode_record(spec)
    assert decode_record(TaskSpec, old) == spec
    assert record_hash(spec) == record_hash(decode_record(TaskSpec, old))


def test_a_trailing_default_spelled_out_is_not_canonical() -> None:
    import msgpack

    wire = to_wire(v1_mlp())
    with pytest.raises(NonCanonical):
        decode_record(TaskSpec, msgpack.packb([*wire, 0]))  # val_size = 0 written out
    layers = [[*layer, 0] for layer in wire[3]]
    with pytest.raises(NonCanonical):
        decode_record(TaskSpec, msgpack.packb([*wire[:3], layers, *wire[4:]]))


def test_version_2_specs_round_trip_with_their_new_fields() -> None:
    for spec in (lm(), cnn(), lm(val_size=0)):
        assert decode_record(TaskSpec, encode_record(spec)) == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": SPEC_V1}, "needs spec version 2"),
        ({"val_size": 1000}, "whole dataset"),
        ({"val_size": 5}, "validation split needs"),
        ({"dataset_size": 116}, "fewer than 17 tokens"),
        ({"loss": LossKind.CROSS_ENTROPY}, "next-token loss"),
        ({"num_classes": 65}, "vocabulary"),
        ({"layers": transformer_layers(64, 8, 32, 4, 1)}, "exceeds the 8 learned positions"),
        ({"layers": (embedding(64, 32), attention(32, 3), lm_head(32, 64))}, "not a multiple of 3 heads"),
        ({"layers": (embedding(64, 32), attention(32, 0), lm_head(32, 64))}, "heads must be"),
        ({"layers": (embedding(64, 32), lm_head(32, 64, tied=True), linear(64, 10))}, "model output"),
        ({"layers": (embedding(64, 16), lm_head(32, 64, tied=True))}, "LmHead"),
        ({"layers": (embedding(64, 32), embedding(32, 32), lm_head(32, 64))}, "first layer"),
        (
            {"layers": (embedding(64, 32), linear(32, 32), lm_head(32, 64, tied=True)), "num_classes": 64},
            None,
        ),
        ({"layers": (embedding(64, 32), Layer(LayerKind.RELU, heads=2), lm_head(32, 64))}, "heads must be 0"),
    ],
)
def test_bad_language_model_specs_are_refused_naming_the_rule(
    change: dict[str, object], message: str | None
) -> None:
    if message is None:
        validate_spec(lm(**change))  # a Linear on (T, d) is fine in version 2
        return
    with pytest.raises(SpecError, match=message):
        validate_spec(lm(**change))


def test_the_attention_score_matrix_counts_against_the_activation_cap() -> None:
    layers = (embedding(256, 64), attention(64, 64), lm_head(64, 256))
    with pytest.raises(SpecError, match="attention scores exceed"):
        validate_spec(
            lm(input_shape=(2048,), layers=layers, num_classes=256, dataset_size=10_000, val_size=0)
        )


def test_pooling_needs_version_2_and_a_sane_window() -> None:
    validate_spec(cnn())
    with pytest.raises(SpecError, match="needs spec version 2"):
        validate_spec(cnn(version=SPEC_V1))
    with pytest.raises(SpecError, match="at most kernel/2"):
        validate_spec(cnn(layers=(maxpool2d(2, padding=2), flatten(), linear(25, 10))))
    with pytest.raises(SpecError, match="pooling expects"):
        validate_spec(lm(layers=(embedding(64, 32), maxpool2d(2), lm_head(32, 64))))


# --- the op dataflow ----------------------------------------------------------------------------


def test_a_transformer_block_is_twelve_ops_each_way_and_its_dataflow_is_well_formed() -> None:
    spec = lm()
    graph = nodes(spec)
    block = [n.prim for n in graph if n.layer == 2]
    assert block == [
        Prim.LAYERNORM,
        Prim.QKV,
        Prim.SCORES,
        Prim.SOFTMAX,
        Prim.MIX,
        Prim.LINEAR,
        Prim.ADD,
        Prim.LAYERNORM,
        Prim.LINEAR,
        Prim.GELU,
        Prim.LINEAR,
        Prim.ADD,
    ]
    ops = step_ops(spec)
    assert len(ops) == ops_per_step(spec) == 3 + 2 * len(graph) + 28
    for j, op in enumerate(ops):
        for ref in op.inputs:
            assert ref.op == START or (0 <= ref.op < j and ref.slot < ops[ref.op].n_outputs)
    # the tied table (parameter 0) is updated from two gradient contributions
    update0 = next(op for op in ops if op.kind is OpKind.UPDATE and op.index == 0)
    assert len(update0.inputs) == 1 + 2 + 2  # parameter, two gradients, Adam's two moments
    # a block input feeds LayerNorm and the skip: its gradient has two contributions
    first_block_ln = next(i for i, n in enumerate(graph) if n.layer == 2)
    back = next(op for op in ops if op.kind is OpKind.BACKWARD and op.index == first_block_ln - 1)
    assert len(back.inputs) == 1 + 1 + 2  # x, the position table, two gradients


def test_version_2_backward_skips_what_needs_no_gradient() -> None:
    spec = cnn()
    pl = plan(spec)
    assert pl.diff[0] == ()  # the first conv reads the batch: only its parameters are differentiated
    head = replace(spec, layers=(flatten(), linear(64, 10)), input_shape=(1, 8, 8))
    assert plan(head).backward == (1,)  # flatten of the batch has no backward op at all
    assert ops_per_step(head) == 3 + 2 + 1 + 2


def test_version_1_op_sequences_are_unchanged() -> None:
    spec = v1_mlp()
    ops = step_ops(spec)
    kinds = [op.kind for op in ops]
    assert kinds == [
        OpKind.BATCH,
        *[OpKind.FORWARD] * 3,
        OpKind.LOSS,
        *[OpKind.BACKWARD] * 3,
        *[OpKind.UPDATE] * 4,
        OpKind.STATE,
    ]
    first_backward = ops[5]  # the last layer: its input, two parameters, the loss gradient
    assert first_backward.n_outputs == 3 and len(first_backward.inputs) == 4
    assert ops[7].n_outputs == 3  # layer 0 still outputs the gradient of the batch (v1 layout)


# --- FLOPs and memory --------------------------------------------------------------------------


def test_attention_is_priced_quadratically_in_the_context() -> None:
    def fwd(t: int) -> int:
        layers = (embedding(64, 32), attention(32, 4), lm_head(32, 64))
        return flops.estimate(lm(input_shape=(t,), layers=layers)).forward_per_sample

    # linear parts grow with T, the scores and weighted sum with T^2
    a, b, c = fwd(4), fwd(8), fwd(16)
    assert (c - b) - 2 * (b - a) > 0
    quad = 2 * 2 * 16 * 16 * 32  # q k^T and probs @ v at T=16
    assert c > quad


def test_version_1_prices_exactly_as_before() -> None:
    est = flops.estimate(v1_mlp())
    assert est.forward_per_sample == 2 * (8 * 4 + 4 * 3) + 4


def test_peak_memory_grows_with_batch_and_context_and_holds_the_runtime() -> None:
    small = peak_memory_mb(lm())
    assert small >= RUNTIME_OVERHEAD_MB
    assert tensor_bytes(lm(batch_size=64)) > tensor_bytes(lm())
    long = lm(input_shape=(64,), layers=transformer_layers(64, 64, 32, 4, 2), dataset_size=2000)
    assert tensor_bytes(long) > 3 * tensor_bytes(lm())  # 4x the context: scores grow 16x


# --- fine-tuning bases -------------------------------------------------------------------------


def _proof(n: int, final_weights: bytes) -> tuple[bytes, list[CheckpointLeaf]]:
    leaves = [CheckpointLeaf(2 * i, bytes([i]) * 32, bytes([100 + i]) * 32, 7) for i in range(n - 1)]
    leaves.append(CheckpointLeaf(2 * (n - 1), final_weights, b"\x09" * 32, 7))
    return merkle_root([leaf_hash(x) for x in leaves]), leaves


def proven_base(n: int = 5, index: int | None = None) -> BaseModel:
    weights = b"\xaa" * 32
    root, leaves = _proof(n, weights)
    i = n - 1 if index is None else index
    proof = inclusion_proof([leaf_hash(x) for x in leaves], i)
    return BaseModel(BaseKind.PROVEN, leaves[i].weights_hash, b"\xbb" * 32, root, leaves[i], proof)


def test_a_proven_base_must_be_the_final_checkpoint_of_its_proof() -> None:
    validate_spec(lm(base=proven_base()))
    with pytest.raises(SpecError, match="final checkpoint"):
        validate_spec(lm(base=proven_base(index=2)))  # a real leaf, but not the last one
    wrong_root = replace(proven_base(), proof_root=b"\x00" * 31 + b"\x01")
    with pytest.raises(SpecError, match="final checkpoint"):
        validate_spec(lm(base=wrong_root))
    other_weights = replace(proven_base(), weights_hash=b"\xcc" * 32)
    with pytest.raises(SpecError, match="not its leaf's weights"):
        validate_spec(lm(base=other_weights))
    with pytest.raises(SpecError, match="version 2"):
        validate_spec(replace(v1_mlp(), base=proven_base()))


def test_is_final_checkpoint_says_which_leaf_ends_a_proof() -> None:
    root, leaves = _proof(9, b"\xaa" * 32)
    hashes = [leaf_hash(x) for x in leaves]
    assert is_final_checkpoint(root, leaves[-1], inclusion_proof(hashes, 8))
    assert not is_final_checkpoint(root, leaves[3], inclusion_proof(hashes, 3))
    assert not is_final_checkpoint(root, leaves[3], inclusion_proof(hashes, 8))


def test_an_uploaded_base_carries_no_proof_and_round_trips() -> None:
    up = BaseModel(BaseKind.UPLOADED, b"\xaa" * 32, b"\xbb" * 32)
    spec = lm(base=up)
    validate_spec(spec)
    assert decode_record(TaskSpec, encode_record(spec)) == spec
    with pytest.raises(SpecError, match="no proof root"):
        validate_spec(lm(base=replace(up, proof_root=b"\x01" * 32)))


def test_standalone_attention_and_mlp_layers_compose_into_a_model() -> None:
    layers = (
        embedding(64, 32),
        pos_embedding(16, 32),
        layernorm(32),
        attention(32, 2),
        gelu_mlp(32, 48),
        transformer_block(32, 2, 64),
        layernorm(32),
        lm_head(32, 64),
    )
    validate_spec(lm(layers=layers))


def test_the_largest_transformer_step_fits_the_games_messages() -> None:
    from protocol.pol.jobs import RefereeJob
    from protocol.pol.messages import MAX_OPS_PER_STEP, OpOutputs, OpReveal

    layers = (
        embedding(64, 8),
        pos_embedding(4, 8),
        *[transformer_block(8, 2, 8)] * 28,
        layernorm(8),
        lm_head(8, 64),
    )
    spec = lm(input_shape=(4,), layers=layers, val_size=0)
    validate_spec(spec)
    ops = step_ops(spec)
    assert len(ops) <= MAX_OPS_PER_STEP
    n_params = len(plan(spec).param_grads)
    d = b"\x07" * 32
    reveal = OpReveal(
        d, (d,) * n_params, (d,) * 2 * n_params, tuple(OpOutputs((d,) * op.n_outputs) for op in ops)
    )
    assert decode_record(OpReveal, encode_record(reveal)) == reveal
    state_op = ops[-1]
    job = RefereeJob(
        d, spec, 0, len(ops) - 1, (d,) * len(state_op.inputs), OpOutputs((d, d)), OpOutputs((d, d)), 0.0
    )
    assert decode_record(RefereeJob, encode_record(job)) == job
