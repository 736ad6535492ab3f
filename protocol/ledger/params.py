"""Ledger economics: every number the rules use, named once, with the reason next to it.

Amounts are integers in the chain's smallest unit. Fractions are integer parts per
million (`PPM`), so every rule rounds the same way on every node (floats never touch
consensus state). `DEVNET` and `MAINNET` are the ledger parts of the chain presets a
genesis names (protocol.chain_params.PRESETS, the one table of them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from protocol.encoding import canonical_hash

#: Denominator of every fraction in the params: 1_000_000 ppm == 100 %.
PPM = 1_000_000
#: Upper bound on the total supply. Half of u64, so that a sum of any two amounts in
#: the state (a balance plus an incoming transfer) can never overflow a U64 field.
MAX_SUPPLY = 2**63 - 1


@dataclass(frozen=True, slots=True)
class LedgerParams:
    """The economics of one chain; fixed at genesis and hashed into the state root."""

    # Every transaction pays at least this much, so a flood of txs costs real money.
    base_fee: int
    # Plus this much per byte of the signed tx: block space is the scarce resource.
    fee_per_byte: int
    # Share of each fee destroyed rather than paid to the proposer: it makes fee
    # spam a loss for a proposer who stuffs its own blocks with its own txs.
    fee_burn_ppm: int
    # Blocks a stake stays slashable after Unbond. Must exceed the evidence age, or a
    # validator could equivocate, unbond, and walk away before the evidence lands.
    unbonding_period: int
    # Most concurrent unbonding entries per account (bounds the queue; Cosmos uses 7).
    max_unbonding_entries: int
    # Share of the offender's stake destroyed for double signing. Large enough that
    # equivocating costs more than any single block could be worth.
    slash_equivocation_ppm: int
    # Share of the slashed amount paid to whoever reported the evidence: enough to
    # make watching profitable, small enough that self-reporting still loses money.
    whistleblower_reward_ppm: int
    # Evidence older than this many blocks is refused; also bounds the memory of
    # processed evidence, which is pruned past this age.
    max_evidence_age: int
    # The committee size: consensus cost grows with the square of the validator count.
    max_validators: int
    # Blocks per epoch; the validator set changes only at epoch boundaries, so
    # consensus sees a stable set and light clients a rare handover.
    epoch_length: int
    # Smallest bonded stake that can join the validator set (sybil resistance).
    min_validator_stake: int
    # Smallest Bond/Unbond amount: bounds dust entries in stakes and the queue.
    min_bond: int
    # Share of each task fee sent to the jackpot pool (read by the market).
    jackpot_tax_ppm: int

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 0:
                raise ValueError(f"ledger param {f.name} must be a non-negative int, got {value!r}")
        for name in ("fee_burn_ppm", "slash_equivocation_ppm", "whistleblower_reward_ppm", "jackpot_tax_ppm"):
            if getattr(self, name) > PPM:
                raise ValueError(f"ledger param {name} is a fraction in ppm and must be <= {PPM}")
        if self.epoch_length < 1 or self.max_validators < 1 or self.max_evidence_age < 1:
            raise ValueError("epoch_length, max_validators and max_evidence_age must be >= 1")
        if self.unbonding_period <= self.max_evidence_age:
            raise ValueError("unbonding_period must exceed max_evidence_age (or stake escapes slashing)")
        if self.max_unbonding_entries < 1 or self.min_bond < 1:
            raise ValueError("max_unbonding_entries and min_bond must be >= 1")

    def params_hash(self) -> bytes:
        """Committed in the state so two nodes with different economics disagree at once."""
        return canonical_hash([[f.name, getattr(self, f.name)] for f in dataclasses.fields(self)])

    def replace(self, **changes: int) -> LedgerParams:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown ledger params: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


DEVNET = LedgerParams(
    base_fee=10,
    fee_per_byte=0,  # devnet: fees stay predictable in tests whatever the tx size
    fee_burn_ppm=500_000,
    unbonding_period=120,  # short, so simulations see releases within a couple hundred blocks
    max_unbonding_entries=7,
    slash_equivocation_ppm=50_000,  # 5 %, as Cosmos Hub's double-sign slash
    whistleblower_reward_ppm=100_000,  # 10 % of the slashed amount
    max_evidence_age=100,  # evidence lands within a few blocks in netsim; 100 is slack
    max_validators=64,
    epoch_length=10,
    min_validator_stake=100,
    min_bond=1,
    jackpot_tax_ppm=20_000,  # 2 % of each task fee
)

MAINNET = LedgerParams(
    base_fee=1_000,
    fee_per_byte=10,
    fee_burn_ppm=500_000,
    # ~3 weeks at 1 s blocks, matching Cosmos's 21 days: long enough for evidence to
    # propagate and for social coordination after a long-range attack.
    unbonding_period=1_814_400,
    max_unbonding_entries=7,
    slash_equivocation_ppm=50_000,
    whistleblower_reward_ppm=100_000,
    max_evidence_age=100_000,
    max_validators=100,  # Tendermint chains run well up to ~100-150 validators
    epoch_length=3_600,  # hourly set changes at 1 s blocks
    min_validator_stake=10_000_000,
    min_bond=1_000,
    jackpot_tax_ppm=20_000,
)
