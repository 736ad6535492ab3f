"""What a search returns: its best assignment, its cost and how it got there."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.schedule.cost import IntArray
from protocol.schedule.model import Cost


@dataclass(frozen=True, slots=True)
class SearchResult:
    grid: IntArray  # grid[stage, rank] = device
    cost: Cost
    evaluations: int
    #: Best total (ns) after each evaluation: the search's convergence curve.
    history: tuple[int, ...]
    method: str
