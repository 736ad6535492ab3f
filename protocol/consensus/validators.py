"""The validator set: a capped committee of top stakers with Tendermint's
stake-weighted round-robin proposer selection.

Proposer priority (Tendermint's algorithm): every selection, each validator's priority
grows by its power; the highest priority proposes and pays back the total power. Over
any window a validator proposes in proportion to its stake, deterministically, and no
validator waits long. Priorities are kept centred on zero and within a window of
2 x total power so that joins and power changes cannot starve or favour anyone for long.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from protocol.app import Validator
from protocol.encoding import canonical_hash
from protocol.errors import ValidationError

from .limits import MAX_VALIDATORS

#: Priorities are rescaled when their spread exceeds this many times the total power.
PRIORITY_WINDOW_FACTOR = 2
#: A joining validator starts this far behind (1.125 x total, as in Tendermint), so that
#: unbonding and re-bonding cannot be used to jump the proposer queue.
NEW_VALIDATOR_PENALTY_NUM, NEW_VALIDATOR_PENALTY_DEN = 9, 8


class InvalidValidatorSet(ValidationError):
    """An empty set, a duplicate key, or a non-positive power."""


def select_committee(candidates: Iterable[Validator], cap: int = MAX_VALIDATORS) -> tuple[Validator, ...]:
    """The top `cap` stakers with positive power; ties broken by key so every node agrees."""
    ranked = sorted((v for v in candidates if v.power > 0), key=lambda v: (-v.power, v.pubkey))
    return tuple(sorted(ranked[:cap], key=lambda v: v.pubkey))


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """An immutable committee with the proposer priorities at the start of a height."""

    validators: tuple[Validator, ...]  # sorted by pubkey
    priorities: tuple[int, ...]

    @classmethod
    def genesis(cls, validators: Iterable[Validator], cap: int = MAX_VALIDATORS) -> ValidatorSet:
        members = select_committee(validators, cap)
        _check(members)
        return cls(members, tuple(0 for _ in members))

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    def powers(self) -> dict[bytes, int]:
        return {v.pubkey: v.power for v in self.validators}

    def hash(self) -> bytes:
        return canonical_hash([[v.pubkey, v.power] for v in self.validators])

    def proposer(self, round_: int) -> bytes:
        """Proposer of round `round_` at this height: round r is selection r+1 from here."""
        return proposer_sequence(self, round_ + 1)[-1]

    def next_height(self) -> ValidatorSet:
        """Priorities for the next height (one selection per height, whatever the round)."""
        pri = list(self.priorities)
        _select(self.validators, pri)
        return ValidatorSet(self.validators, tuple(pri))

    def with_members(self, new: Iterable[Validator], cap: int = MAX_VALIDATORS) -> ValidatorSet:
        """Apply an epoch's new committee: continuing members keep their priority, new
        members start behind by 1.125 x the new total power."""
        members = select_committee(new, cap)
        _check(members)
        old = {v.pubkey: p for v, p in zip(self.validators, self.priorities)}
        total = sum(v.power for v in members)
        penalty = -(total * NEW_VALIDATOR_PENALTY_NUM // NEW_VALIDATOR_PENALTY_DEN)
        pri = [old.get(v.pubkey, penalty) for v in members]
        _rescale_and_centre(members, pri)
        return ValidatorSet(members, tuple(pri))


class ProposerSchedule:
    """Who proposes each round of one height, computed once and incrementally.

    `ValidatorSet.proposer(r)` replays r+1 selections from the height's priorities, so
    asking it for rounds 0..R costs O(R^2 n); this keeps the priorities where the last
    answer left them and extends the list. It is the one answer a node uses for both
    "only the round's proposer may propose" (the machine) and "the block names the
    proposer of its round" (check_block), so the two can never disagree. Callers bound
    the rounds they ask for (see validation.check_block's round rule)."""

    def __init__(self, vset: ValidatorSet) -> None:
        self._members = vset.validators
        self._pri = list(vset.priorities)
        self._seq: list[bytes] = []

    def __call__(self, round_: int) -> bytes:
        while len(self._seq) <= round_:
            self._seq.append(_select(self._members, self._pri))
        return self._seq[round_]


def proposer_sequence(vset: ValidatorSet, count: int) -> list[bytes]:
    """The next `count` proposers from this set's priorities."""
    pri = list(vset.priorities)
    return [_select(vset.validators, pri) for _ in range(count)]


def _select(members: tuple[Validator, ...], pri: list[int]) -> bytes:
    _rescale_and_centre(members, pri)
    total = 0
    for i, v in enumerate(members):
        pri[i] += v.power
        total += v.power
    # Highest priority wins; on a tie the smaller key (members are sorted by key).
    best = max(range(len(members)), key=lambda i: (pri[i], -i))
    pri[best] -= total
    return members[best].pubkey


def _rescale_and_centre(members: tuple[Validator, ...], pri: list[int]) -> None:
    total = sum(v.power for v in members)
    window = PRIORITY_WINDOW_FACTOR * total
    spread = max(pri) - min(pri)
    if spread > window:
        ratio = -(-spread // window)
        for i, p in enumerate(pri):
            q = abs(p) // ratio  # truncate towards zero, as Go's integer division
            pri[i] = q if p >= 0 else -q
    avg = sum(pri) // len(pri)
    for i in range(len(pri)):
        pri[i] -= avg


def _check(members: tuple[Validator, ...]) -> None:
    # Rule: at least one validator, or nothing can ever be committed.
    if not members:
        raise InvalidValidatorSet("validator set is empty")
    # Rule: each key at most once (a duplicate would count its power twice).
    if len({v.pubkey for v in members}) != len(members):
        raise InvalidValidatorSet("duplicate validator key")
    # Rule: 32-byte ed25519 keys only.
    if any(len(v.pubkey) != 32 for v in members):
        raise InvalidValidatorSet("validator key must be 32 bytes")
