"""Consensus parameters every validator of a chain shares, fixed at genesis.

Why these and not the rest of `ConsensusConfig`: a node's rebroadcast, sync-retry and
cache sizes are its own tuning, but the timeouts decide when the whole committee moves
to the next round (validators with different timeouts fall out of step, round after
round), the block limits decide what a proposer may put in a block, and the clock
drift decides which live blocks are valid. So these live in genesis, are stored in the
state (table `consensus/params`, covered by the state root) and are identical on every
node; the rest stays in code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from protocol.consensus.limits import MAX_BLOCK_TX_BYTES, MAX_BLOCK_TXS
from protocol.consensus.tendermint import TimeoutConfig
from protocol.errors import ConfigError

#: Longest any consensus timeout may be: a round that waits longer than 10 minutes is a
#: chain that looks halted to everyone who watches it.
MAX_TIMEOUT_MS = 600_000
#: Largest clock drift a live block may show (a day is far beyond any honest clock).
MAX_CLOCK_DRIFT_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class ConsensusParams:
    """Round timeouts (Tendermint's, growing by `timeout_delta_ms` per round up to
    `timeout_max_ms`), block limits and the clock drift a live block may show."""

    propose_timeout_ms: int
    prevote_timeout_ms: int
    precommit_timeout_ms: int
    timeout_delta_ms: int
    timeout_max_ms: int
    #: A proposer puts at most this many transactions and bytes of them in a block.
    max_block_txs: int
    max_block_bytes: int
    #: A live block's time may be at most this far ahead of a validator's clock.
    max_clock_drift_ms: int

    def timeouts(self) -> TimeoutConfig:
        return TimeoutConfig(
            propose_ms=self.propose_timeout_ms,
            prevote_ms=self.prevote_timeout_ms,
            precommit_ms=self.precommit_timeout_ms,
            delta_ms=self.timeout_delta_ms,
            max_ms=self.timeout_max_ms,
        )


def check_consensus_params(p: ConsensusParams) -> None:
    """Refuse parameters a chain cannot run with (one check per rule)."""
    for f in dataclasses.fields(p):
        value = getattr(p, f.name)
        # Rule: every parameter is a non-negative integer.
        if type(value) is not int or value < 0:
            raise ConfigError(f"consensus.{f.name} must be a non-negative integer, got {value!r}")
    # Rule: every timeout is at least 1 ms and at most MAX_TIMEOUT_MS.
    for name in ("propose_timeout_ms", "prevote_timeout_ms", "precommit_timeout_ms", "timeout_max_ms"):
        if not 1 <= getattr(p, name) <= MAX_TIMEOUT_MS:
            raise ConfigError(f"consensus.{name} must be in 1..{MAX_TIMEOUT_MS} ms, got {getattr(p, name)}")
    # Rule: the cap is above every base timeout (or later rounds would be shorter).
    base = max(p.propose_timeout_ms, p.prevote_timeout_ms, p.precommit_timeout_ms)
    if p.timeout_max_ms < base:
        raise ConfigError(f"consensus.timeout_max_ms {p.timeout_max_ms} is below a base timeout ({base})")
    # Rule: the growth per round stays below the cap.
    if p.timeout_delta_ms > MAX_TIMEOUT_MS:
        raise ConfigError(f"consensus.timeout_delta_ms must be at most {MAX_TIMEOUT_MS}")
    # Rule: block limits fit the decoders' hard caps (a bigger block could not travel).
    if not 1 <= p.max_block_txs <= MAX_BLOCK_TXS:
        raise ConfigError(f"consensus.max_block_txs must be in 1..{MAX_BLOCK_TXS}, got {p.max_block_txs}")
    if not 1 <= p.max_block_bytes <= MAX_BLOCK_TX_BYTES:
        raise ConfigError(
            f"consensus.max_block_bytes must be in 1..{MAX_BLOCK_TX_BYTES}, got {p.max_block_bytes}")
    # Rule: some drift is allowed (clocks differ), but not an unbounded one.
    if not 1 <= p.max_clock_drift_ms <= MAX_CLOCK_DRIFT_MS:
        raise ConfigError(f"consensus.max_clock_drift_ms must be in 1..{MAX_CLOCK_DRIFT_MS}")


_DEFAULT_TIMEOUTS = TimeoutConfig()

#: What every chain ran before consensus parameters were in genesis (TimeoutConfig's
#: defaults, the decoders' block caps, 10 s of drift): about 1 s rounds on a LAN.
DEVNET = ConsensusParams(
    propose_timeout_ms=_DEFAULT_TIMEOUTS.propose_ms,
    prevote_timeout_ms=_DEFAULT_TIMEOUTS.prevote_ms,
    precommit_timeout_ms=_DEFAULT_TIMEOUTS.precommit_ms,
    timeout_delta_ms=_DEFAULT_TIMEOUTS.delta_ms,
    timeout_max_ms=_DEFAULT_TIMEOUTS.max_ms,
    max_block_txs=MAX_BLOCK_TXS,
    max_block_bytes=MAX_BLOCK_TX_BYTES,
    max_clock_drift_ms=10_000,
)

#: Validators spread over continents: CometBFT's defaults (3 s propose, 1 s votes,
#: +0.5 s per round), for the ~6 s blocks the mainnet market windows assume.
MAINNET = ConsensusParams(
    propose_timeout_ms=3_000,
    prevote_timeout_ms=1_000,
    precommit_timeout_ms=1_000,
    timeout_delta_ms=500,
    timeout_max_ms=30_000,
    max_block_txs=MAX_BLOCK_TXS,
    max_block_bytes=MAX_BLOCK_TX_BYTES,
    max_clock_drift_ms=10_000,
)
