"""Shared builders for the ledger tests (no tests here)."""

from __future__ import annotations

from typing import Any

from protocol.app import BlockContext
from protocol.consensus.evidence import make_evidence
from protocol.consensus.votes import Vote, VoteType, sign_vote
from protocol.envelope import seal
from protocol.identity import Keypair
from protocol.ledger import Ledger
from protocol.ledger.genesis import Genesis, GenesisAccount
from protocol.ledger.params import DEVNET, LedgerParams
from protocol.records import encode_record

CHAIN = "polnet-test"
KEYS = [Keypair.derive(f"ledger-test-{i}") for i in range(6)]
PUB = [k.public for k in KEYS]
ZERO = b"\x00" * 32


def genesis(
    params: LedgerParams = DEVNET,
    balances: tuple[int, ...] = (10_000,) * 6,
    stakes: tuple[int, ...] = (1_000, 1_000, 1_000, 0, 0, 0),
) -> Genesis:
    accts = tuple(GenesisAccount(PUB[i], balances[i], stakes[i]) for i in range(len(balances)))
    return Genesis(CHAIN, params, 0, accts)


def ledger(params: LedgerParams = DEVNET, **kw: Any) -> Ledger:
    return Ledger.from_genesis(genesis(params, **kw), audit=True)


def tx(key: Keypair, body: Any) -> bytes:
    return seal(body, key, CHAIN)


def block(
    led: Ledger, txs: tuple[bytes, ...] = (), evidence: tuple[bytes, ...] = (), proposer: bytes = PUB[0]
) -> BlockContext:
    h = led.height + 1
    return BlockContext(h, 1_000 * h, proposer, txs, evidence, h.to_bytes(32, "big"))


def apply(
    led: Ledger, *txs: bytes, evidence: tuple[bytes, ...] = (), proposer: bytes = PUB[0]
) -> tuple[int, ...]:
    return led.finalize_block(block(led, tuple(txs), evidence, proposer)).rejected


def equivocation(
    key: Keypair, height: int, round_: int = 0, step: VoteType = VoteType.PREVOTE, salt: int = 0
) -> bytes:
    """Encoded evidence that `key` signed two different votes at one position."""
    a = sign_vote(CHAIN, Vote(height, round_, step, bytes([1 + salt]) * 32, key.public), key.sign)
    b = sign_vote(CHAIN, Vote(height, round_, step, bytes([2 + salt]) * 32, key.public), key.sign)
    return encode_record(make_evidence(a, b))
