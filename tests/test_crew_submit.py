"""Submitting a crew task (`polnet task submit crew.toml`, cli/task_cmd.py): the file is the
spec blob; the transaction declares the file's crew, steps and segments, work by the
usual 6 x params x tokens estimate split evenly among the members, and the file's
`[market]` offer; the node's admin endpoint accepts exactly what matches its file and
says which rule a mismatch breaks."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cli.task_cmd import crew_submission
from netsim.scenarios.market.crew import crew_file
from node.daemon.tasks import _crew_request
from protocol.errors import ConfigError, ValidationError
from protocol.market.process import check_crew_submit
from protocol.pol.crew_spec import crew_gflops, crew_steps, parse_crew_spec

FILE = crew_file(2, 2, 7) + b"[market]\nmax_price_per_gflop = 120\n"


class Blobs:
    def __init__(self, blobs: dict[bytes, bytes]) -> None:
        self._blobs = blobs

    def read(self, digest: bytes) -> bytes | None:
        return self._blobs.get(digest)


class Compute:
    def __init__(self, *blobs: bytes) -> None:
        import hashlib

        self.blobs = Blobs({hashlib.sha256(b).digest(): b for b in blobs})


def test_a_crew_file_becomes_a_submit_the_ledger_and_the_node_accept() -> None:
    tx = crew_submission(FILE, salt=5)
    settings = parse_crew_spec(FILE)
    assert (tx.stages, tx.data_parallel, tx.steps, tx.checkpoint_interval) == (2, 2, 64, 1)
    assert tx.gflops == crew_gflops(settings) and tx.gflops % 4 == 0 and tx.gflops > 0
    assert tx.max_price_per_gflop == 120 and tx.reproducible
    check_crew_submit(tx)  # the ledger's crew rules
    assert _crew_request(tx, None, Compute(FILE)) == tx  # type: ignore[arg-type]
    assert crew_steps(settings) == 64


def test_the_work_estimate_grows_with_the_model_and_the_tokens() -> None:
    small = parse_crew_spec(crew_file(2, 2, 1))
    wider = parse_crew_spec(crew_file(2, 2, 1).replace(b"width = 16", b"width = 64"))
    assert crew_gflops(wider) > crew_gflops(small)


@pytest.mark.parametrize("change, why", [
    ({"stages": 1, "data_parallel": 4}, "the crew is 1 x 4"),
    ({"steps": 65}, "steps and checkpoint interval"),
    ({"checkpoint_interval": 2}, "steps and checkpoint interval"),
])
def test_the_node_refuses_a_submit_that_does_not_match_its_crew_file(change: dict[str, Any],
                                                                     why: str) -> None:
    tx = replace(crew_submission(FILE, salt=5), **change)
    with pytest.raises(ValidationError, match=why):
        _crew_request(tx, None, Compute(FILE))  # type: ignore[arg-type]


def test_a_missing_file_a_private_crew_and_a_file_without_an_offer_are_refused_with_reasons() -> None:
    tx = crew_submission(FILE, salt=5)
    with pytest.raises(ValidationError, match="not in this node's blob directory"):
        _crew_request(tx, None, Compute())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="cannot be private"):
        _crew_request(tx, b"k" * 32, Compute(FILE))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_price_per_gflop"):
        crew_submission(crew_file(2, 2, 7), salt=5)
    with pytest.raises(ConfigError, match="unknown market key"):
        parse_crew_spec(crew_file(2, 2, 7) + b"[market]\nprice = 3\n")


def test_the_example_crew_file_is_a_submit_the_ledger_accepts() -> None:
    from pathlib import Path

    raw = (Path(__file__).resolve().parent.parent / "docs" / "examples" / "crew.toml").read_bytes()
    tx = crew_submission(raw, salt=1)
    check_crew_submit(tx)
    assert (tx.stages, tx.data_parallel, tx.steps // tx.checkpoint_interval) == (2, 2, 64)
