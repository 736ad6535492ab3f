"""Consensus node configuration and the names of what it persists and the timers it sets.

The persisted kinds and keys are part of the node's on-disk format: a shell stores
Persist(kind, key, value) records and hands them back to `ConsensusNode.restore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.app import Validator

from .limits import MAX_BLOCK_TX_BYTES, MAX_BLOCK_TXS, MAX_VALIDATORS
from .tendermint import TimeoutConfig

PERSIST_BLOCK = "consensus/block"
PERSIST_VOTES = "consensus/own-votes"
#: A consensus snapshot (protocol.consensus.snapshot); key: height (8 bytes, big-endian)
#: followed by the application's state root after that height (32 bytes), so a store can
#: index it without decoding the value.
PERSIST_SNAPSHOT = "consensus/snapshot"
OWN_VOTES_KEY = b"current"
TIMER_REBROADCAST = "consensus/rebroadcast"
TIMER_NEXT_HEIGHT = "consensus/next-height"
TIMER_SYNC = "consensus/sync"


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    chain_id: str
    genesis_validators: tuple[Validator, ...]
    genesis_time: int = 0
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    #: The committee changes only after heights that are multiples of this.
    epoch_length: int = 100
    max_validators: int = MAX_VALIDATORS
    max_block_txs: int = MAX_BLOCK_TXS
    max_block_bytes: int = MAX_BLOCK_TX_BYTES
    #: Resend own messages when (height, round, step) has not moved for this long: the
    #: network may lose messages and gossip does not retransmit.
    rebroadcast_ms: int = 2000
    #: Wait this long for a block-sync answer before asking again.
    sync_retry_ms: int = 1000
    #: Evidence older than this many heights is not included or accepted (keep it at or
    #: below the application's own horizon, or committed evidence would be ignored).
    max_evidence_age: int = 100
    #: At most one block-sync answer per peer per this interval.
    serve_interval_ms: int = 200
    #: A live block's time may be at most this far ahead of this node's clock.
    max_clock_drift_ms: int = 10_000
    #: Recent committed blocks kept in memory to serve peers that fall behind.
    block_cache: int = 1024
    #: Pause between committing a block and starting the next height. Zero is the fast
    #: path (the next proposer proposes at once); a single-validator chain needs > 0 or it
    #: produces empty blocks without virtual time passing.
    block_interval_ms: int = 0
    #: Persist a snapshot (consensus state + the application's `snapshot()`) after every
    #: height that is a multiple of this, so a restart replays at most this many blocks.
    #: 0: never (the application need not support snapshots).
    snapshot_every: int = 0
    #: After start, listen this long for peers that are ahead before starting to vote, so
    #: a restarted validator catches up by block sync instead of voting on a stale height.
    #: 0: start at once (netsim, single nodes).
    startup_sync_ms: int = 0
    #: A node catching up stops waiting for its sync peer after this long without a new
    #: block and starts voting at its height anyway (a stale vote is harmless; waiting for
    #: a peer that went away is not).
    sync_stall_ms: int = 5000
