"""The crew's staged model (node/compute/crew/model.py): the cut never changes the weights,
and a whole model's weights under canonical names load into any cut."""

from __future__ import annotations

import pytest
import torch

from node.compute.crew.model import ModelShape, block_split, build_stage, canonical_state

SHAPE = ModelShape(blocks=4, width=16, heads=2, context=8)


def whole_state(stages: int, seed: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for s in range(stages):
        out.update(canonical_state(build_stage(SHAPE, stages, s, seed), SHAPE, stages, s))
    return out


def test_the_initial_weights_do_not_depend_on_how_the_model_is_cut() -> None:
    one, two, four = whole_state(1, 5), whole_state(2, 5), whole_state(4, 5)
    assert one.keys() == two.keys() == four.keys()
    assert all(torch.equal(one[k], four[k]) and torch.equal(one[k], two[k]) for k in one)
    assert not torch.equal(one["head.out.weight"], whole_state(1, 6)["head.out.weight"])


def test_a_whole_models_weights_load_into_every_stage_of_another_cut() -> None:
    base = {k: v + 1.0 for k, v in whole_state(1, 5).items()}
    loaded: dict[str, torch.Tensor] = {}
    for s in range(4):
        loaded.update(canonical_state(build_stage(SHAPE, 4, s, 9, base), SHAPE, 4, s))
    assert all(torch.equal(loaded[k], base[k]) for k in base)


def test_a_base_of_another_shape_is_a_value_error() -> None:
    other = ModelShape(blocks=4, width=32, heads=2, context=8)
    base = canonical_state(build_stage(other, 1, 0, 5), other, 1, 0)
    with pytest.raises(ValueError, match="do not fit"):
        build_stage(SHAPE, 4, 0, 5, base)


def test_the_stages_compose_to_the_whole_model() -> None:
    tokens = torch.randint(0, 256, (2, SHAPE.context), generator=torch.Generator().manual_seed(1))
    whole = build_stage(SHAPE, 1, 0, 3)
    x = tokens
    for s in range(4):
        x = build_stage(SHAPE, 4, s, 3)(x)
    assert torch.equal(x, whole(tokens))
    assert block_split(4, 4) == [range(i, i + 1) for i in range(4)]
