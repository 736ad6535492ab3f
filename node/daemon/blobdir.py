"""Content-addressed blobs on disk, served to peers by the transport.

A blob is stored under the hex of its SHA-256; the name is the claim and the content
is checked against it when read, so a corrupted or swapped file is never served.

Serving streams (`open_source`): the file is hashed in bounded chunks, then sent from
the same open file a chunk at a time, so a 32 MiB blob served to four slow readers
costs four chunks of memory, not four copies of the blob. A file whose (size, mtime,
inode) was hashed recently is not hashed again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import trio

from node.datadir import write_atomic
from protocol.errors import BlobError

#: Largest blob kept (the transport caps what it serves and fetches separately).
MAX_BLOB_BYTES = 256 * 1024 * 1024
#: Read size when hashing a file before serving it.
HASH_CHUNK = 1024 * 1024
#: Files remembered as checked, by (digest) -> (size, mtime_ns, inode).
CHECKED_FILES = 1024


class FileSource:
    """An open, hash-checked blob file the transport streams from (node.transport.blobs
    BlobSource). Reads run in worker threads; the caller closes it."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    async def read_chunk(self, n: int) -> bytes:
        return await trio.to_thread.run_sync(self._f.read, n)

    async def aclose(self) -> None:
        self._f.close()


class BlobDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._checked: OrderedDict[bytes, tuple[int, int, int]] = OrderedDict()
        self._checked_lock = threading.Lock()  # opens run in several worker threads

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

    def has(self, digest: bytes) -> bool:
        """Whether the blob's file is here (a provider query: existence, not a read)."""
        try:
            return self.path(digest).is_file()
        except BlobError:
            return False

    async def get(self, digest: bytes) -> bytes | None:
        """The transport's blob provider (file reads happen in a worker thread)."""
        return await trio.to_thread.run_sync(self.read, digest)

    async def open_source(self, digest: bytes) -> FileSource | None:
        """The transport's streaming blob provider: an open file whose content hashes to
        `digest`, or None (absent, unreadable or corrupt)."""
        return await trio.to_thread.run_sync(self._open_checked, digest)

    def _open_checked(self, digest: bytes) -> FileSource | None:
        try:
            f = open(self.path(digest), "rb")  # noqa: SIM115 - closed by FileSource.aclose
        except (OSError, BlobError):
            return None
        try:
            st = os.fstat(f.fileno())
            ident = (st.st_size, st.st_mtime_ns, st.st_ino)
            if st.st_size > MAX_BLOB_BYTES:
                raise OSError("blob file over the size cap")
            with self._checked_lock:
                known = self._checked.get(digest) == ident
            if not known:
                hasher = hashlib.sha256()
                while chunk := f.read(HASH_CHUNK):
                    hasher.update(chunk)
                if hasher.digest() != digest:
                    raise OSError("blob file does not hash to its name")
                f.seek(0)
                with self._checked_lock:
                    self._checked[digest] = ident
                    self._checked.move_to_end(digest)
                    while len(self._checked) > CHECKED_FILES:
                        self._checked.popitem(last=False)
            return FileSource(f, st.st_size)
        except OSError:
            f.close()
            return None
