"""Content-addressed blobs on disk, served to peers by the transport.

A blob is stored under the hex of its SHA-256; the name is the claim and the content
is checked against it when read, so a corrupted or swapped file is never served.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from node.datadir import write_atomic
from protocol.errors import BlobError

#: Largest blob kept (the transport caps what it serves and fetches separately).
MAX_BLOB_BYTES = 256 * 1024 * 1024


class BlobDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: bytes) -> Path:
        if len(digest) != 32:
            raise BlobError("blob digest must be 32 bytes")
        return self.root / digest.hex()

    def put(self, data: bytes) -> bytes:
        if len(data) > MAX_BLOB_BYTES:
            raise BlobError(f"blob of {len(data)} bytes exceeds {MAX_BLOB_BYTES}")
        digest = hashlib.sha256(data).digest()
        write_atomic(self.path(digest), data, mode=0o600)
        return digest

    def read(self, digest: bytes) -> bytes | None:
        try:
            data = self.path(digest).read_bytes()
        except (FileNotFoundError, BlobError):
            return None
        return data if hashlib.sha256(data).digest() == digest else None

    async def get(self, digest: bytes) -> bytes | None:
        """The transport's blob provider (file reads happen in a worker thread)."""
        return await trio.to_thread.run_sync(self.read, digest)
