"""Market transactions and adverts on the wire: signed round trips and strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.envelope import open_envelope, seal
from protocol.errors import DecodeError
from protocol.identity import Keypair
from protocol.market.messages import CapacityAdvert
from protocol.market.state import NO_BASE
from protocol.market.txs import Challenge, DeviceClass, SubmitTask, Verdict, VerdictReveal
from protocol.records import decode_record, encode_record
from protocol.schema import to_wire

KEY = Keypair.derive("wire")
H = b"\x11" * 32


@given(
    gflops=st.integers(0, 2**64 - 1),
    steps=st.integers(0, 2**32 - 1),
    ops=st.integers(0, 2**16 - 1),
    reproducible=st.booleans(),
)
def test_submit_task_round_trips_through_a_signed_envelope(gflops: int, steps: int, ops: int,
                                                           reproducible: bool) -> None:
    tx = SubmitTask(H, gflops, steps, 1, ops, DeviceClass.CUDA, 1, reproducible, 5, 9, NO_BASE, 3, 1)
    env = open_envelope(seal(tx, KEY, "polnet-test"), "polnet-test")
    assert env.body == tx and env.sender == KEY.public


def test_nested_verdict_and_advert_round_trip() -> None:
    for msg in (VerdictReveal(H, Verdict(False, 3, 77), H, 1, 2),
                CapacityAdvert(DeviceClass.CPU, 1, 2, 3, 4, 5, 6)):
        assert decode_record(type(msg), encode_record(msg)) == msg


def test_out_of_range_fields_are_refused_when_decoding() -> None:
    wire = to_wire(Challenge(H, 0, 0, 1, 0, 0))
    wire[1] = 256  # target is a U8
    from protocol.encoding import pack

    with pytest.raises(DecodeError):
        decode_record(Challenge, pack(wire))
    wire[1], wire[0] = 0, b"short"  # task id must be 32 bytes
    with pytest.raises(DecodeError):
        decode_record(Challenge, pack(wire))


def test_unknown_device_class_is_refused() -> None:
    wire = to_wire(CapacityAdvert(DeviceClass.CPU, 1, 2, 3, 4, 5, 6))
    wire[0] = 9
    from protocol.encoding import pack

    with pytest.raises(DecodeError):
        decode_record(CapacityAdvert, pack(wire))
