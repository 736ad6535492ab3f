"""Records used from several threads: the daemon decodes and encodes in worker threads
(chain restore, compute) while its event loop does too, and the first use of a record
type compiles its codec. A thread that meets the codec while another is still compiling
it must still encode and decode (it used to fail with KeyError: 'c')."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from protocol import schema
from protocol.records import decode_record, encode_record
from protocol.schema import U32, Text


@dataclass(frozen=True, slots=True)
class Probe:
    n: U32
    label: Text


def test_a_record_used_while_its_codec_is_being_compiled_still_round_trips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []
    interleaved: list[bool] = []
    real = schema._compile_record_encoder

    def compile_then_interleave(*args: Any) -> Any:
        # What another thread does between the placeholder and the finished codec.
        if args[0] is Probe and not interleaved:
            interleaved.append(True)
            seen.append(decode_record(Probe, encode_record(Probe(7, "mid-compile"))))
        return real(*args)

    monkeypatch.setattr(schema, "_compile_record_encoder", compile_then_interleave)
    assert decode_record(Probe, encode_record(Probe(1, "after"))) == Probe(1, "after")
    assert seen == [Probe(7, "mid-compile")]
