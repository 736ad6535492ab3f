"""AQ-SGD boundary compression (node/compute/crew/aqsgd.py): exact wire sizes, both sides'
caches equal bit for bit, deltas shrinking the error, bad messages typed errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node.compute.crew import aqsgd
from node.compute.crew.aqsgd import (
    ActivationCache,
    BoundaryReceiver,
    BoundarySender,
    CodecError,
    decode,
    decode_grad,
    encode,
    encode_grad,
    quantize,
    wire_bytes,
)


def tensor(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 3, 4, 5, 8]), st.integers(1, 5), st.integers(1, 7), st.integers(0, 99))
def test_codes_round_trip_through_the_wire_at_every_bit_width(
        bits: int, rows: int, cols: int, seed: int) -> None:
    q = quantize(tensor((rows, cols), seed), bits)
    data = encode(q)
    assert len(data) == wire_bytes((rows, cols), bits)
    back = decode(data, (rows, cols))
    assert torch.equal(back.codes, q.codes) and torch.equal(back.scale, q.scale)


def test_quantization_uses_two_to_the_bits_levels_spanning_each_tokens_max_abs() -> None:
    x = torch.tensor([[1.0, -3.0, 0.9], [0.0, 0.0, 0.0]])
    q = quantize(x, 2)  # 2 bits: -s, -s/3, s/3, s with s = 3 for the first token
    assert torch.equal(q.scale, torch.tensor([3.0, 0.0]))
    assert torch.allclose(q.dequantize()[0], torch.tensor([1.0, -3.0, 1.0]))
    assert bool((q.dequantize()[1] == 0).all())  # an all-zero token stays zero


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_rounding_to_nearest_errs_by_at_most_half_a_level(bits: int) -> None:
    x = tensor((64, 16), 3)
    level = (x.abs().amax(dim=-1, keepdim=True) * 2 / ((1 << bits) - 1))
    assert bool(((quantize(x, bits).dequantize() - x).abs() <= level / 2 + 1e-6).all())


def test_two_bit_activations_cost_under_a_twelfth_of_fp32_on_the_wire() -> None:
    shape = (8, 64, 64)
    assert wire_bytes(shape, 2) / (4 * 8 * 64 * 64) < 0.079  # 1/16 + one fp32 scale per token


def pair(n: int, shape: tuple[int, ...], bits: int) -> tuple[BoundarySender, BoundaryReceiver]:
    return (BoundarySender(ActivationCache(n, shape), bits),
            BoundaryReceiver(ActivationCache(n, shape)))


def test_first_pass_goes_in_full_then_deltas_and_both_caches_stay_identical() -> None:
    sender, receiver = pair(4, (3, 5), 2)
    ids = torch.tensor([0, 2])
    a0 = tensor((2, 3, 5), 1)
    msg = sender.encode(ids, a0)
    assert msg[:1] == b"F"
    assert torch.equal(receiver.decode(ids, msg, (2, 3, 5)), a0)
    for step in range(5):
        a = a0 + 0.01 * (step + 1) * tensor((2, 3, 5), 10 + step)
        msg = sender.encode(ids, a)
        assert msg[:1] == b"Q" and len(msg) == 1 + wire_bytes((2, 3, 5), 2)
        got = receiver.decode(ids, msg, (2, 3, 5))
        assert torch.equal(sender.cache.m, receiver.cache.m)  # bit for bit
        assert torch.equal(got, receiver.cache.m[ids])


def test_deltas_track_slowly_moving_activations_far_better_than_direct_quantization() -> None:
    sender, receiver = pair(1, (64, 32), 2)
    direct = BoundarySender(ActivationCache(1, (64, 32)), 2, direct=True)
    ids = torch.tensor([0])
    base = tensor((1, 64, 32), 7)
    receiver.decode(ids, sender.encode(ids, base), (1, 64, 32))
    a = base
    for step in range(20):
        a = a + 0.01 * tensor((1, 64, 32), 100 + step)
        got = receiver.decode(ids, sender.encode(ids, a), (1, 64, 32))
    d = BoundaryReceiver(ActivationCache(1, (64, 32))).decode(ids, direct.encode(ids, a), (1, 64, 32))
    assert float((got - a).abs().mean()) * 10 < float((d - a).abs().mean())


def test_a_micro_batch_mixing_first_and_later_passes_is_refused() -> None:
    sender, _ = pair(4, (2,), 2)
    sender.encode(torch.tensor([0]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="mixes"):
        sender.encode(torch.tensor([0, 1]), torch.ones(2, 2))


def test_a_delta_before_its_first_pass_is_a_codec_error() -> None:
    sender, receiver = pair(2, (2,), 2)
    sender.encode(torch.tensor([0]), torch.ones(1, 2))
    delta = sender.encode(torch.tensor([0]), 2 * torch.ones(1, 2))
    with pytest.raises(CodecError):
        receiver.decode(torch.tensor([0]), delta, (1, 2))


@pytest.mark.parametrize("data", [b"", b"X123", b"F" + bytes(7), b"Q" + bytes(3), b"D" + bytes(100)])
def test_malformed_boundary_messages_are_codec_errors(data: bytes) -> None:
    _, receiver = pair(2, (2,), 2)
    receiver.cache.seen[:] = True
    with pytest.raises(CodecError):
        receiver.decode(torch.tensor([0]), data, (1, 2))


def test_a_header_that_does_not_fit_the_shape_or_non_finite_scales_are_refused() -> None:
    good = encode(quantize(tensor((2, 3), 1), 4))
    with pytest.raises(CodecError):
        decode(good, (3, 2))
    bad = bytearray(good)
    bad[6:10] = torch.tensor([float("nan")]).numpy().tobytes()  # the first scale
    with pytest.raises(CodecError):
        decode(bytes(bad), (2, 3))


def test_gradients_round_trip_at_8_bits_and_in_fp32() -> None:
    g = tensor((4, 6), 2)
    assert torch.equal(decode_grad(encode_grad(g, None), (4, 6)), g)
    back = decode_grad(encode_grad(g, 8), (4, 6))
    assert float((back - g).abs().max()) <= float(g.abs().max()) / 255 + 1e-6


def test_a_cache_over_the_ram_cap_lives_in_a_file_and_behaves_the_same(tmp_path: Path) -> None:
    disk = ActivationCache(3, (4, 4), spill_dir=tmp_path, max_ram=16)
    ram = ActivationCache(3, (4, 4))
    assert disk.on_disk and not ram.on_disk and any(tmp_path.iterdir())
    for cache in (disk, ram):
        cache.m[1] = 2.5
    assert torch.equal(disk.m, ram.m)
    disk.close()
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="spill"):
        ActivationCache(3, (4, 4), max_ram=16)


def test_activation_bits_are_the_documented_ones() -> None:
    assert aqsgd.ACTIVATION_BITS == (2, 3, 4, 8) and aqsgd.GRAD_BITS == 8


def test_an_fp32_message_holding_a_nan_or_inf_is_refused() -> None:
    for bad in (float("nan"), float("inf")):
        x = torch.zeros(2, 3, 4)
        x[1, 2, 3] = bad
        message = aqsgd.encode_grad(x, None)
        with pytest.raises(aqsgd.CodecError, match="not finite"):
            aqsgd.decode_grad(message, (2, 3, 4))
        with pytest.raises(aqsgd.CodecError, match="not finite"):
            BoundaryReceiver(ActivationCache(4, (3, 4))).decode(torch.tensor([0, 1]), message, (2, 3, 4))
