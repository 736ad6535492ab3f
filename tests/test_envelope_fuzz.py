"""The fuzz target runs in CI for a bounded time and must find nothing; and it must be
able to find something, or its silence would mean nothing."""

from __future__ import annotations

import random

from protocol.envelope import Envelope, open_envelope
from protocol.errors import Malformed
from tests import fuzz_envelope

CI_SECONDS = 10.0


def test_fuzzing_open_envelope_for_a_bounded_time_finds_nothing() -> None:
    report = fuzz_envelope.run(seconds=CI_SECONDS, seed=20240611)
    assert report.findings == [], report.findings[0][1]
    assert report.execs > 1_000
    # The structure-aware mutations reach past the signature: some mutated bodies are
    # accepted (valid re-signed values) and some fail the schema after a valid signature.
    assert report.accepted > 0
    assert report.rejected.get("BadSignature", 0) > 0
    assert report.rejected.get("LimitExceeded", 0) > 0


def test_the_fuzzer_reports_an_exception_that_escapes_the_decoder() -> None:
    def leaky(data: bytes, chain_id: str) -> Envelope:
        if len(data) > 2 and data[1] == 0x02:  # trips on bit flips of the version byte
            raise IndexError("planted bug")
        return open_envelope(data, chain_id)

    report = fuzz_envelope.run(seconds=5.0, seed=1, target=leaky, max_findings=1)
    assert report.findings and "planted bug" in report.findings[0][1]


def test_the_fuzzer_reports_an_accepted_non_canonical_input() -> None:
    def lax(data: bytes, chain_id: str) -> Envelope:
        try:
            return open_envelope(data, chain_id)
        except Malformed:
            return open_envelope(data[:-2], chain_id)  # a decoder that tolerates padding

    seed = fuzz_envelope.make_seeds(random.Random(1))[0]
    report = fuzz_envelope.Report()
    fuzz_envelope.check_one(seed, report, lax)
    assert report.findings == []
    fuzz_envelope.check_one(seed + b"\x00\x00", report, lax)
    assert [why for _, why in report.findings] == ["accepted an input that is not its own canonical encoding"]
