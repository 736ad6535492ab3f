"""Content-addressed blobs on disk, served to peers by the transport.

A blob is stored under the hex of its SHA-256; the name is the claim and the content
is checked against it when read, so a corrupted or swapped file is never served.

Sealed blobs (a private task's, node/compute/sealedblobs.py): the ciphertext S is a blob
like any other, stored under sid = SHA-256(S), so this node stores, checks and serves it
without being able to read it. A key holder looks it up by its locator (an HMAC of the
plaintext's digest under the task key: it cannot know sid before it has S), so
`put_sealed` also writes an alias, `aliases/<locator hex>`, holding the 32 bytes of sid
(written atomically, after the blob; any other length is ignored). `read`, `has` and
`open_source` follow an alias when no blob file is named by the requested digest, so
the blob server serves a request for a locator with no protocol change; what they
return still hashes to the file's own name. The alias directory is the only
subdirectory; nothing else here lists the root.

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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import trio

from node.datadir import write_atomic, write_atomic_pieces
from protocol.errors import BlobError
from protocol.sealing import sealed_size

#: Largest blob kept (the transport caps what it serves and fetches separately).
MAX_BLOB_BYTES = 256 * 1024 * 1024
#: Largest sealed blob kept: the sealed form of a blob of the largest size.
MAX_SEALED_BLOB_BYTES = sealed_size(MAX_BLOB_BYTES)
#: Read size when hashing a file before serving it.
HASH_CHUNK = 1024 * 1024
#: Files remembered as checked, by (digest) -> (size, mtime_ns, inode).
CHECKED_FILES = 1024
#: Subdirectory of the root holding locator -> sid aliases of sealed blobs.
ALIAS_DIR = "aliases"
DIGEST_LEN = 32


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
        if len(digest) != DIGEST_LEN:
            raise BlobError("blob digest must be 32 bytes")
        return self.root / digest.hex()

    def alias_path(self, locator: bytes) -> Path:
        if len(locator) != DIGEST_LEN:
            raise BlobError("sealed-blob locator must be 32 bytes")
        return self.root / ALIAS_DIR / locator.hex()

    def put(self, data: bytes) -> bytes:
        return self._put(data, MAX_BLOB_BYTES)

    def _put(self, data: bytes, cap: int) -> bytes:
        if len(data) > cap:
            raise BlobError(f"blob of {len(data)} bytes exceeds {cap}")
        digest = hashlib.sha256(data).digest()
        write_atomic(self.path(digest), data, mode=0o600)
        return digest

    def put_sealed(self, locator: bytes, sealed: bytes) -> bytes:
        """Store a sealed blob under its own hash (like `put`) and the alias `locator` ->
        that hash; returns the hash (sid)."""
        alias = self.alias_path(locator)
        sid = self._put(sealed, MAX_SEALED_BLOB_BYTES)
        write_atomic(alias, sid, mode=0o600)
        return sid

    def put_sealed_pieces(self, locator: bytes, pieces: Iterable[bytes]) -> bytes:
        """`put_sealed` of a sealed blob given as pieces (`seal_pieces`), hashed and written
        as they come: a big dataset sealed on a submitter's machine is never held twice (or
        even once) in memory. Over MAX_SEALED_BLOB_BYTES is a BlobError and stores nothing."""
        check = hashlib.sha256()
        total = 0

        def counted() -> Iterator[bytes]:
            nonlocal total
            for piece in pieces:
                total += len(piece)
                if total > MAX_SEALED_BLOB_BYTES:
                    raise BlobError(f"sealed blob exceeds {MAX_SEALED_BLOB_BYTES} bytes")
                check.update(piece)
                yield piece

        # One name per writer: two puts of one locator (two threads, two processes) never share it.
        staging = self.root / f".staging-{locator.hex()}-{os.getpid()}-{threading.get_ident()}"
        write_atomic_pieces(staging, counted())
        sid = check.digest()
        os.replace(staging, self.path(sid))
        write_atomic(self.alias_path(locator), sid, mode=0o600)
        return sid

    def read_sealed(self, locator: bytes) -> bytes | None:
        """The sealed blob the alias `locator` names (hash-checked against its sid), or None."""
        sid = self._alias(locator)
        return self._read_named(sid) if sid is not None else None

    def read(self, digest: bytes) -> bytes | None:
        """The blob named `digest`, else the sealed blob `digest` is a locator of."""
        name = self._resolve(digest)
        return self._read_named(name) if name is not None else None

    def has(self, digest: bytes) -> bool:
        """Whether the blob's file is here, directly or through an alias (a provider
        query: existence, not a read)."""
        return self._resolve(digest) is not None

    def _read_named(self, digest: bytes) -> bytes | None:
        try:
            data = self.path(digest).read_bytes()
        except (OSError, BlobError):
            return None
        return data if hashlib.sha256(data).digest() == digest else None

    def _resolve(self, digest: bytes) -> bytes | None:
        """The name of the file that answers for `digest`: its own, else its alias's
        target; None if neither file is here."""
        try:
            if self.path(digest).is_file():
                return digest
        except BlobError:
            return None
        sid = self._alias(digest)
        if sid is not None and self.path(sid).is_file():
            return sid
        return None

    def _alias(self, locator: bytes) -> bytes | None:
        """The sid an alias file holds: exactly 32 bytes, else (absent, short, long,
        unreadable) None."""
        try:
            with open(self.alias_path(locator), "rb") as f:
                sid = f.read(DIGEST_LEN + 1)
        except (OSError, BlobError):
            return None
        return sid if len(sid) == DIGEST_LEN else None

    async def get(self, digest: bytes) -> bytes | None:
        """The transport's blob provider (file reads happen in a worker thread)."""
        return await trio.to_thread.run_sync(self.read, digest)

    async def open_source(self, digest: bytes) -> FileSource | None:
        """The transport's streaming blob provider: an open file whose content hashes to
        `digest` (or, for a sealed blob's locator, to the sid its alias names), or None
        (absent, unreadable or corrupt)."""
        return await trio.to_thread.run_sync(self._open_resolved, digest)

    def _open_resolved(self, digest: bytes) -> FileSource | None:
        name = self._resolve(digest)
        return self._open_checked(name) if name is not None else None

    def _open_checked(self, digest: bytes) -> FileSource | None:
        try:
            f = open(self.path(digest), "rb")  # noqa: SIM115 - closed by FileSource.aclose
        except (OSError, BlobError):
            return None
        try:
            st = os.fstat(f.fileno())
            ident = (st.st_size, st.st_mtime_ns, st.st_ino)
            if st.st_size > MAX_SEALED_BLOB_BYTES:
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
