"""`Ledger`: the PoS ledger as a consensus Application (protocol/app.py).

check_tx and select_txs never change the committed state (select_txs simulates the
candidates in a frame that is always rolled back), so consensus may call them at any
time. finalize_block applies a whole block atomically: if anything unexpected escapes,
the state is exactly as before and the error propagates (a bug halts this node rather
than forking it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from protocol.app import BlockContext, BlockOutcome, Validator
from protocol.encoding import sha256
from protocol.envelope import open_envelope
from protocol.errors import DecodeError, ValidationError
from protocol.ledger.errors import InsufficientFunds, NonceError, UnknownTxType
from protocol.ledger.evidence import EvidenceVerifier, consensus_evidence
from protocol.ledger.genesis import Genesis, genesis_state
from protocol.ledger.params import LedgerParams
from protocol.ledger.primitives import audit_supply
from protocol.ledger.registry import block_hooks, tx_type
from protocol.ledger.rules import (
    begin_block,
    check_fee,
    end_block,
    process_ante,
    process_evidence,
    validators_for,
)
from protocol.ledger.state import State
from protocol.ledger.txs import MAX_TX_BYTES, SignedTx
from protocol.limits import Limits

#: How far ahead of the account's next nonce check_tx admits a tx (mempool gap bound).
MAX_NONCE_AHEAD = 64
#: Verified transactions remembered so a tx is verified once, not in check_tx and again
#: in finalize_block. Pure function of the bytes, so caching cannot change outcomes.
VERIFIED_CACHE = 16_384
TX_LIMITS = Limits(max_bytes=MAX_TX_BYTES)


class Ledger:
    def __init__(self, state: State, *, audit: bool = False) -> None:
        self.state = state
        self._audit = audit  # run the supply audit after every block (tests, netsim)
        self._verified: OrderedDict[bytes, SignedTx[Any]] = OrderedDict()

    @classmethod
    def from_genesis(
        cls, genesis: Genesis, *, verify_evidence: EvidenceVerifier = consensus_evidence, audit: bool = False
    ) -> Ledger:
        return cls(genesis_state(genesis, verify_evidence), audit=audit)

    @classmethod
    def restore(
        cls,
        params: LedgerParams,
        snapshot: bytes,
        *,
        verify_evidence: EvidenceVerifier = consensus_evidence,
        audit: bool = False,
    ) -> Ledger:
        return cls(State.restore(params, snapshot, verify_evidence), audit=audit)

    # --- Application ---------------------------------------------------------------------------

    def check_tx(self, tx: bytes) -> None:
        """Stateless checks, then against the committed state. A tx with exactly the next
        nonce is simulated in full; one a little ahead is admitted (it may become valid)."""
        stx, process = self._decode(tx)
        acct = self.state.account(stx.sender)
        nonce = stx.body.nonce
        if nonce < acct.nonce:
            raise NonceError(f"nonce {nonce} already used (next is {acct.nonce})")
        if nonce > acct.nonce + MAX_NONCE_AHEAD:
            raise NonceError(f"nonce {nonce} more than {MAX_NONCE_AHEAD} ahead of {acct.nonce}")
        check_fee(self.state.params, stx)
        if acct.balance < stx.body.fee:
            raise InsufficientFunds(f"balance {acct.balance} cannot pay fee {stx.body.fee}")
        if nonce == acct.nonce:
            with self.state.discard():
                self._deliver(stx, process)

    def select_txs(self, candidates: Sequence[bytes], max_bytes: int) -> list[bytes]:
        """The candidates that apply, in order, on top of each other, within max_bytes."""
        chosen: list[bytes] = []
        used = 0
        with self.state.discard():
            for raw in candidates:
                if used + len(raw) > max_bytes:
                    continue
                try:
                    stx, process = self._decode(raw)
                    self._deliver(stx, process)
                except (ValidationError, DecodeError):
                    continue
                chosen.append(raw)
                used += len(raw)
        return chosen

    def finalize_block(self, block: BlockContext) -> BlockOutcome:
        state = self.state
        rejected: list[int] = []
        with state.atomic():
            begin_block(state, block)
            for hook in block_hooks():
                if hook.begin is not None:
                    hook.begin(state, block)
            for raw in block.evidence:
                self._block_evidence(raw, block.proposer)
            for i, raw in enumerate(block.txs):
                if not self._apply_tx(raw):
                    rejected.append(i)
            for hook in block_hooks():
                if hook.end is not None:
                    hook.end(state, block)
            end_block(state, block)
            if self._audit:
                audit_supply(state)
        return BlockOutcome(state.root(), self.validators(), tuple(rejected))

    def app_hash(self) -> bytes:
        return self.state.root()

    def validators(self) -> tuple[Validator, ...]:
        return validators_for(self.state, self.state.height + 1)

    # --- extras --------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self.state.height

    def beacon(self) -> bytes:
        """Randomness for elections: a hash chain over every committed block so far."""
        return self.state.beacon

    def snapshot(self) -> bytes:
        return self.state.export()

    # --- internals -------------------------------------------------------------------------------

    def _decode(self, raw: bytes) -> tuple[SignedTx[Any], Any]:
        """Envelope decode + signature check (cached), then the tx type's stateless check."""
        key = sha256(raw)
        stx = self._verified.get(key)
        if stx is None:
            env = open_envelope(raw, self.state.meta.chain_id, TX_LIMITS)
            stx = SignedTx(env.sender, env.body, key, len(raw))
            self._verified[key] = stx
            if len(self._verified) > VERIFIED_CACHE:
                self._verified.popitem(last=False)
        ttype = tx_type(type(stx.body))
        if ttype is None:
            raise UnknownTxType(f"{type(stx.body).__name__} is not a ledger transaction")
        if ttype.check is not None:
            ttype.check(stx)
        return stx, ttype.process

    def _deliver(self, stx: SignedTx[Any], process: Any) -> None:
        """Ante and the rule, all or nothing (used where a failed tx must leave no trace)."""
        with self.state.atomic():
            process_ante(self.state, stx)
            process(self.state, stx)

    def _apply_tx(self, raw: bytes) -> bool:
        """Apply one block tx. A tx whose ante passed pays its fee and uses its nonce even
        if its own rule fails (as in Cosmos): otherwise invalid txs would cost nothing."""
        try:
            stx, process = self._decode(raw)
            with self.state.atomic():
                process_ante(self.state, stx)
        except (ValidationError, DecodeError):
            return False
        try:
            with self.state.atomic():
                process(self.state, stx)
        except ValidationError:
            return False
        return True

    def _block_evidence(self, raw: bytes, proposer: bytes) -> None:
        """Evidence consensus put in the block; the proposer is the reporter. Invalid or
        already-slashed evidence is skipped (deterministically) rather than failing the block."""
        try:
            with self.state.atomic():
                process_evidence(self.state, raw, reporter=proposer)
        except (ValidationError, DecodeError):
            pass
