"""Cross-checking a crew's transcripts (node/compute/crew/crosscheck.py): an honest crew
agrees with itself everywhere; a boundary liar (sends one tensor, records the hash of
another) is found at exactly its message, and a replica applying another gradient than
its stage's all-reduce at exactly its step."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.compute import datasets
from node.compute.crew.crosscheck import Mismatch, cross_check
from node.compute.crew.launch import run_local_crew
from node.compute.crew.model import ModelShape
from node.compute.crew.pipeline import CrewConfig

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TINY = CrewConfig(stages=3, shape=ModelShape(blocks=3, width=16, heads=2, context=16), micro_batch=4,
                  micro_batches=2, epochs=2, n_train=16, n_val=8, lr=3e-3, seed=4, bits=2)
DP = replace(TINY, stages=2, shape=ModelShape(blocks=2, width=16, heads=2, context=16), data_parallel=2,
             micro_batch=2)
TOKENS = datasets.corpus().tokens


def test_an_honest_crew_agrees_with_itself_everywhere() -> None:
    assert cross_check(TINY, run_local_crew(TINY, TOKENS, deadline_s=300)) == []


@pytest.mark.parametrize(("liar", "found"), [
    ((1, 2, 3), Mismatch("boundary", (1, 2), 3)),  # an activation, forward (a later epoch's delta too)
    ((1, 2, 6), Mismatch("boundary", (1, 2), 6)),
    ((2, 1, 0), Mismatch("boundary", (2, 1), 0)),  # a gradient, backward
])
def test_a_boundary_liar_is_found_at_exactly_its_message(liar: tuple[int, int, int], found: Mismatch) -> None:
    assert cross_check(TINY, run_local_crew(TINY, TOKENS, deadline_s=300, liar=liar)) == [found]


def test_a_replica_applying_another_gradient_is_found_at_exactly_its_step() -> None:
    honest = run_local_crew(DP, TOKENS, deadline_s=300)
    assert cross_check(DP, honest) == []
    reduced = list(honest[3].reduced)
    reduced[2] = (reduced[2][0], b"\x00" * 32)
    forged = [*honest[:3], replace(honest[3], reduced=reduced)]
    assert cross_check(DP, forged) == [Mismatch("all-reduce", (2, 3), 2)]


def test_results_not_one_per_member_by_rank_are_refused() -> None:
    with pytest.raises(ValueError):
        cross_check(TINY, [])
