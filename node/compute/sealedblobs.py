"""The engine's blobs for one private task: every blob stored and served sealed.

`SealedBlobs` is `node.compute.market_engine.Blobs` over a `SealingStore` (a daemon's
`NetworkBlobs`, netsim's `SharedBlobs`) and the task's content key. The engine keeps
seeing plaintext ids: `put(P)` returns d = sha256(P) and `get(d)` returns P, as for a
public task, while what is stored, served and fetched is the sealed blob S =
`seal_blob(K, P)` (protocol/sealing.py).

Why locators: S is kept under its own hash sid = sha256(S), so every node (a serving
node that holds no key included) stores and serves it hash-checked, like any blob; but
a fetcher that knows d cannot know sid before it has S, and asking the network for d
would tell every peer which plaintext it wants. So S is looked up by L =
`sealed_locator(K, d)`, an HMAC of d under the task key: the key holder computes it, no
one else can link it to d. A store keeps an alias L -> sid beside the blob, and the
blob protocol serves a request for L from it with no change (node/transport/blobs.py).
The fetcher cannot hash-check a body against L, so it checks by opening it: a body
that does not open under K to a plaintext hashing to d is a wrong blob (its sender is
scored as for a hash mismatch and the next peer is asked).

What a serving node sees: the locator asked for, the sid and the size of the sealed
blob (the plaintext's length to the byte, the chunk size), and which requests ask for
the same blob; never the plaintext or its digest. Its store holds only ciphertext.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

from protocol.errors import SealedBlobError, SealError
from protocol.sealing import CONTENT_KEY_LEN, open_blob, seal_blob, sealed_locator, sealed_size

#: A check the store runs on every candidate sealed blob (ours or a peer's): True if it
#: is the blob wanted. It does not raise.
SealedCheck = Callable[[bytes], bool]


class SealingStore(Protocol):
    """Sealed blobs kept by their own hash and found by locator (see the module doc)."""

    def get_sealed(self, locator: bytes, max_size: int, check: SealedCheck) -> bytes:
        """A sealed blob of at most `max_size` bytes filed under `locator` that `check`
        accepts, or a BlobError."""
        ...

    def put_sealed(self, locator: bytes, sealed: bytes) -> bytes:
        """Keep `sealed` under its hash and `locator`; returns its hash."""
        ...

    def prefetch_sealed(self, wanted: list[tuple[bytes, int, SealedCheck]]) -> None:
        """Fetch the (locator, max size, check) blobs not yet held, concurrently; failures
        are left for `get_sealed`."""
        ...


class _Opener:
    """The check for one sealed blob: opens it and, with `keep`, keeps the last
    plaintext opened so the blob the store returns need not be decrypted again (a
    prefetch's checks keep nothing: nobody reads their plaintext)."""

    __slots__ = ("digest", "keep", "key", "max_plain", "plain", "sealed")

    def __init__(self, key: bytes, digest: bytes, max_plain: int, keep: bool = True) -> None:
        self.key = key
        self.digest = digest
        self.max_plain = max_plain
        self.keep = keep
        self.sealed: bytes | None = None
        self.plain: bytes | None = None

    def __call__(self, sealed: bytes) -> bool:
        try:
            plain = open_blob(self.key, self.digest, sealed, self.max_plain)
        except SealedBlobError:
            return False
        if self.keep:
            self.sealed, self.plain = sealed, plain
        return True

    def opened(self, sealed: bytes) -> bytes:
        """The plaintext of `sealed` (the blob the store returned, which passed this check)."""
        if self.plain is not None and (sealed is self.sealed or sealed == self.sealed):
            return self.plain
        return open_blob(self.key, self.digest, sealed, self.max_plain)  # raises SealedBlobError


class SealedBlobs:
    """`node.compute.market_engine.Blobs` for one private task, over a `SealingStore`."""

    def __init__(self, inner: SealingStore, content_key: bytes) -> None:
        if len(content_key) != CONTENT_KEY_LEN:
            raise SealError(f"content key must be {CONTENT_KEY_LEN} bytes")
        self.inner = inner
        self._key = content_key

    def locator(self, digest: bytes) -> bytes:
        """The name the sealed form of the blob `digest` is found by."""
        return sealed_locator(self._key, digest)

    def put(self, data: bytes) -> bytes:
        """Seal and store `data`; returns its plaintext id, sha256(data)."""
        digest = hashlib.sha256(data).digest()
        self.inner.put_sealed(self.locator(digest), seal_blob(self._key, data, digest=digest))
        return digest

    def get(self, digest: bytes, max_size: int) -> bytes:
        """The plaintext blob `digest` (at most `max_size` bytes), found sealed by its
        locator and opened; a sealed blob that does not open to it is a SealedBlobError."""
        opener = _Opener(self._key, digest, max_size)
        sealed = self.inner.get_sealed(self.locator(digest), sealed_size(max_size), opener)
        return opener.opened(sealed)

    def prefetch(self, wanted: list[tuple[bytes, int]]) -> None:
        self.inner.prefetch_sealed(
            [(self.locator(d), sealed_size(n), _Opener(self._key, d, n, keep=False)) for d, n in wanted]
        )
