"""The simulated blob network: who holds which content-addressed blob.

Blobs (datasets, checkpoints, operation inputs) travel by stream in the real node, not
by gossip, so they get their own model: a Fetch picks a reachable holder, costs one
link latency plus size / bandwidth, and answers None after a timeout when no reachable
peer holds the blob. A node comes to hold a blob by fetching it, by persisting it as
Persist(BLOB_KIND, digest, data), or by the scenario calling `add` before the run.
"""

from __future__ import annotations

from protocol.encoding import sha256

#: Persist kind under which a core stores a blob it is willing to serve.
BLOB_KIND = "blob"


class BlobStore:
    """Blob contents by digest, and the set of holders of each digest."""

    __slots__ = ("_data", "_holders")

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._holders: dict[bytes, set[int]] = {}

    def add(self, node: int, data: bytes) -> bytes:
        """Make `node` hold `data`; returns its digest (SHA-256)."""
        digest = sha256(data)
        self._data[digest] = data
        self._holders.setdefault(digest, set()).add(node)
        return digest

    def holds(self, node: int, digest: bytes) -> bool:
        return node in self._holders.get(digest, ())

    def holders(self, digest: bytes) -> list[int]:
        """Holders in index order (sorted, so choices made from it are deterministic)."""
        return sorted(self._holders.get(digest, ()))

    def get(self, digest: bytes) -> bytes | None:
        return self._data.get(digest)
