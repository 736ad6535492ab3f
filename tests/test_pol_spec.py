"""Task spec validation, FLOPs pricing and the op dataflow (pure core)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import DecodeError, SpecError
from protocol.pol import flops
from protocol.pol.ops import START, OpKind, ops_per_step, step_ops
from protocol.pol.spec import (
    MAX_LAYERS,
    Layer,
    LayerKind,
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
    validate_spec,
)
from protocol.records import decode_record, encode_record


def mlp(**kw: object) -> TaskSpec:
    base = TaskSpec(
        1,
        (8,),
        3,
        (linear(8, 4), relu(), linear(4, 3)),
        LossKind.CROSS_ENTROPY,
        OptimizerSpec(OptimizerKind.SGD, 0.1, momentum=0.9),
        4,
        8,
        2,
        b"\x01" * 32,
        64,
        1,
        2,
        3,
        ReproProfile(),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def every_layer_spec() -> TaskSpec:
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
    return mlp(input_shape=(1, 4, 4), layers=layers)


def test_whitelisted_layers_infer_shapes_and_validate() -> None:
    shapes = validate_spec(every_layer_spec())
    assert shapes[1] == (2, 4, 4) and shapes[3] == (32,) and shapes[-1] == (3,)


def test_spec_round_trips_through_the_canonical_encoding() -> None:
    spec = every_layer_spec()
    assert decode_record(TaskSpec, encode_record(spec)) == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 9}, "version"),
        ({"layers": (linear(8, 5), relu(), linear(4, 3))}, "Linear expects"),
        ({"layers": (linear(8, 4), relu(), linear(4, 2))}, "model output"),
        ({"layers": (relu(),)}, "model output"),
        ({"steps": 9}, "multiple of the checkpoint interval"),
        ({"batch_size": 0}, "batch size"),
        ({"batch_size": 65}, "batch larger"),
        ({"optimizer": OptimizerSpec(OptimizerKind.SGD, 0.0)}, "learning rate"),
        ({"optimizer": OptimizerSpec(OptimizerKind.ADAM, 1e-3, beta1=1.0)}, "betas"),
        ({"optimizer": OptimizerSpec(OptimizerKind.SGD, float("inf"))}, "finite"),
        ({"profile": ReproProfile(threads=0)}, "threads"),
        ({"layers": (Layer(LayerKind.RELU, in_size=3), linear(8, 3))}, "must be 0"),
        ({"layers": (dropout(0.95), linear(8, 3))}, "dropout rate"),
        ({"layers": (linear(8, 5000), linear(5000, 3))}, "width"),
        ({"steps": 8192, "checkpoint_interval": 1}, "checkpoints"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        validate_spec(mlp(**change))


def test_conv_on_flat_input_is_refused() -> None:
    with pytest.raises(SpecError, match="Conv2d expects"):
        validate_spec(mlp(layers=(conv2d(1, 2, 3), flatten(), linear(8, 3))))


def test_too_many_layers_cannot_even_be_encoded() -> None:
    with pytest.raises(DecodeError):
        encode_record(mlp(layers=tuple([relu()] * (MAX_LAYERS + 1))))


def test_flops_scale_linearly_with_steps_and_batch() -> None:
    a, b = flops.estimate(mlp()), flops.estimate(mlp(steps=16, batch_size=8))
    assert a.forward_per_sample == 2 * (8 * 4 + 4 * 3) + 4
    assert b.total > 2 * a.total and a.total == a.per_step * 8 and a.per_segment == 2 * a.per_step


def test_specs_beyond_the_flops_cap_are_refused() -> None:
    layers = (conv2d(64, 64, 11, padding=5), conv2d(64, 1, 8, stride=8), flatten(), linear(1024, 3))
    huge = mlp(
        input_shape=(64, 256, 256),
        layers=layers,
        batch_size=4096,
        steps=1_000_000,
        checkpoint_interval=1000,
        dataset_size=1 << 20,
    )
    with pytest.raises(SpecError, match="FLOPs"):
        flops.estimate(huge)


def test_step_ops_follow_forward_loss_backward_update_state() -> None:
    spec = every_layer_spec()
    ops = step_ops(spec)
    kinds = [op.kind for op in ops]
    n_layers, n_params = len(spec.layers), 12
    assert kinds == (
        [OpKind.BATCH]
        + [OpKind.FORWARD] * n_layers
        + [OpKind.LOSS]
        + [OpKind.BACKWARD] * n_layers
        + [OpKind.UPDATE] * n_params
        + [OpKind.STATE]
    )
    assert len(ops) == ops_per_step(spec)
    # every input refers to the start state or to an earlier op's existing output slot
    for j, op in enumerate(ops):
        for ref in op.inputs:
            assert ref.op == START or (0 <= ref.op < j and ref.slot < ops[ref.op].n_outputs)


@settings(max_examples=40, deadline=None)
@given(widths=st.lists(st.integers(1, 64), min_size=1, max_size=6), steps=st.integers(1, 64))
def test_any_mlp_within_limits_validates_and_prices(widths: list[int], steps: int) -> None:
    dims = [8, *widths, 3]
    layers = tuple(layer for i in range(len(dims) - 1) for layer in (linear(dims[i], dims[i + 1]), relu()))[
        :-1
    ]
    spec = mlp(layers=layers, steps=steps, checkpoint_interval=1)
    est = flops.estimate(spec)
    assert est.params == sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(len(dims) - 1))
    assert est.total == est.per_step * steps and math.isfinite(est.total)
