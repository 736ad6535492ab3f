"""Timeouts that adapt to why rounds fail, and shrink back when heights succeed.

The paper's timeouts grow with the round (`TimeoutConfig.duration`: base + round x
delta), which is what guarantees that after GST some round is long enough; they start
again from the base at every height. That alone has two faults: a network slower than
the base timeouts wastes the same rounds at every height, and a Byzantine validator that
makes rounds fail (lock splitting, silence) drives the timeouts of later rounds up
although longer timeouts cannot help against it.

The `Pacer` keeps, per step, an extra that outlives heights:

* it grows by `delta_ms` when a timeout of ours fired and what it waited for then came
  after all (`TimedOutTooSoon`: the round's valid proposal, a proof of lock for it, or a
  precommit quorum), which is the one failure a longer timeout fixes;
* it shrinks by `delta_ms` at every height decided in round 0 (the timeouts were long
  enough), back to the configured base.

A failure with nothing late (a silent proposer, prevotes split by a Byzantine coalition)
grows nothing beyond the paper's per-round term. Every duration stays within `max_ms`.
Timeouts never touch safety (Tendermint is safe under any timing); a Byzantine proposer
that proposes late grows the propose timeout by at most `delta_ms` per round it leads,
and honest round-0 decisions take it back.
"""

from __future__ import annotations

from .tendermint import Step, TimeoutConfig


class Pacer:
    """A node's timeouts: the configured ones plus what it learned (see the module doc)."""

    def __init__(self, config: TimeoutConfig) -> None:
        self.config = config
        self.extra: dict[Step, int] = {step: 0 for step in Step}

    def duration(self, step: Step, round_: int) -> int:
        return min(self.config.duration(step, round_) + self.extra[step], self.config.max_ms)

    def too_soon(self, step: Step) -> None:
        """A timeout of `step` fired before what it waited for arrived: lengthen it."""
        cap = self.config.max_ms - self.config.duration(step, 0)
        self.extra[step] = max(0, min(self.extra[step] + self.config.delta_ms, cap))

    def decided(self, round_: int) -> None:
        """A height was decided in `round_`; round 0 means the timeouts were long enough."""
        if round_ == 0:
            for step in Step:
                self.extra[step] = max(0, self.extra[step] - self.config.delta_ms)
