"""A bounded transaction pool: first come, first proposed.

Bounded by count and by bytes, deduplicated by hash. When it is full, new transactions
are refused (the sender retries) rather than evicting old ones, so a flood cannot push
out transactions that were already admitted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from protocol.encoding import sha256
from protocol.errors import ValidationError

DEFAULT_MAX_TXS = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class MempoolFull(ValidationError):
    """No room for another transaction until a block drains the pool."""


class Mempool:
    def __init__(self, max_txs: int = DEFAULT_MAX_TXS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._txs: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._max_txs = max_txs
        self._max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx: bytes) -> bool:
        return sha256(tx) in self._txs

    def add(self, tx: bytes) -> bool:
        """Admit `tx` (already checked by the application); False if it is a duplicate."""
        key = sha256(tx)
        if key in self._txs:
            return False
        if len(self._txs) >= self._max_txs or self._bytes + len(tx) > self._max_bytes:
            raise MempoolFull(f"mempool holds {len(self._txs)} txs / {self._bytes} bytes")
        self._txs[key] = tx
        self._bytes += len(tx)
        return True

    def candidates(self, limit: int) -> list[bytes]:
        out: list[bytes] = []
        for tx in self._txs.values():
            if len(out) >= limit:
                break
            out.append(tx)
        return out

    def remove(self, txs: Iterable[bytes]) -> None:
        for tx in txs:
            old = self._txs.pop(sha256(tx), None)
            if old is not None:
                self._bytes -= len(old)
