"""Sealing for private tasks: content keys, key wraps to elected parties, sealed blobs.

A private task's datasets, checkpoints and weights travel as *sealed blobs*: the submitter
draws one 32-byte content key per task (node code, with os.urandom; this module never draws
randomness), wraps it to each party the market elects (profiler, solver, verifiers,
watchers) with `wrap_content_key`, and every blob of the task is sealed under it.

Everything here is deterministic, on purpose:

* `seal_blob` derives each blob's AES-256-GCM key from the content key *and* the plaintext's
  sha256 (and the chunk layout), so the same tensor always seals to the same bytes. A
  re-executed training segment, a verifier re-deriving a checkpoint and a node that restarts
  half-way through publishing all produce byte-identical sealed blobs, so the sealed locator
  and the sealed digest they commit to are stable. Since every distinct plaintext gets its own
  key, the counter nonces (chunk index plus a final-chunk flag) are never reused under one key
  with different data, even with no random nonce.
* `wrap_content_key` is HPKE-style ephemeral-static X25519, but the ephemeral key is derived
  from the content key, the chain, the task and the recipient rather than drawn: the same wrap
  comes out every time, so a wrap transaction is idempotent and a submitter that restarts
  re-sends the very same bytes. `unwrap_content_key` checks that the wrap is that canonical one.
* A node's X25519 key is derived from its ed25519 identity seed (HKDF, domain-separated, with
  a generation number so the key can be rotated without a new identity).

What an observer without the content key learns: the sizes of the sealed blobs (plaintext
length to the byte, chunk size), how many blobs a task has, and which sealed blobs are equal
(identical plaintexts under the same content key seal to identical blobs with the same
locator; under different content keys they are unrelated). It does not learn plaintext
digests: a sealed blob is looked up by `sealed_locator`, an HMAC of the digest keyed by the
content key (domain-separated from the blob keys, see below). Wraps reveal which public keys
a task's key was wrapped to.

Sealed blob format (version 1):

    header  = b"PLSB" | version (u8) | chunk size (u32 BE) | plaintext length (u64 BE)   17 bytes
    chunk i = AES-256-GCM(blob key, nonce = i (11 bytes BE) | final flag (1 byte),
                          plaintext[i*chunk : (i+1)*chunk], aad = header)                  +16 bytes

with max(1, ceil(length / chunk)) chunks; an empty plaintext is one empty final chunk. The
header is bound into every chunk (AAD) and into the blob key, so chunks cannot be reordered,
dropped, truncated, or moved between blobs or between chunk layouts of the same plaintext.

Keys derived from the content key (HKDF-SHA256, RFC 5869, L = 32; frame(...) prefixes each
part with its u32 BE length; every info opens with its own domain string):

    blob key  = HKDF-Expand(content key, frame(b"polnet sealed blob key v1", header, sha256(plaintext)))
    locator   = HKDF-Expand(content key, frame(b"polnet sealed locator v1", sha256(plaintext)))
    ephemeral = HKDF-Expand(content key, frame(b"polnet key wrap ephemeral v1", chain, task, recipient))

(chain as UTF-8, task id and recipient's X25519 public key as raw bytes; the ephemeral is the
wrap's X25519 private key, its public key the wrap's first 32 bytes).

The content key is 32 uniformly random bytes, already a cryptographically strong key, so it
is HKDF's PRK itself and HKDF-Extract is skipped (RFC 5869 section 3.3); with L = 32,
HKDF-Expand is a single block, HMAC-SHA256(PRK, info | 0x01), so each derivation from the
content key is exactly one HMAC. The other keys keep the full HKDF, extract included: the
key-encryption key (from an X25519 shared secret, which is not uniform) and a node's X25519
key (from its ed25519 identity seed, under a salt of its own).

Change (2026-12-02, nothing deployed, so the version stays 1): these three derivations used
to run HKDF-Extract(salt b"polnet content key v1", content key) first, and the locator was
HMAC-SHA256(digest) under a key HKDF-derived with info b"polnet sealed locator v1". Blobs,
locators and wraps made by that code do not open under this one.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct
from collections.abc import Callable, Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from protocol.errors import KeyWrapError, SealedBlobError, SealError

# --- sizes and limits ------------------------------------------------------------------------

#: A task's content key (the submitter draws it with os.urandom).
CONTENT_KEY_LEN = 32
#: Raw X25519 public and private key bytes.
ENC_KEY_LEN = 32
#: An ed25519 identity seed, the input of `enc_private_key`.
IDENTITY_SEED_LEN = 32
#: Highest key generation (bumping the generation rotates a node's encryption key).
MAX_GENERATION = 255
#: AEAD tag (AES-GCM and ChaCha20-Poly1305 alike).
TAG_LEN = 16
#: A key wrap: ephemeral X25519 public | encrypted content key | tag.
WRAP_LEN = ENC_KEY_LEN + CONTENT_KEY_LEN + TAG_LEN
#: A plaintext blob digest (sha256) and a sealed locator (HMAC-SHA256).
DIGEST_LEN = 32
#: Plaintext bytes per sealed chunk.
SEAL_CHUNK = 1 << 20
#: Largest chunk size a sealed header may announce (bounds what one chunk may allocate).
MAX_SEAL_CHUNK = 1 << 24
#: Longest chain id or task id bound into a wrap (both are length-prefixed, so any length
#: up to this is unambiguous).
MAX_ID_LEN = 256

SEAL_MAGIC = b"PLSB"
SEAL_VERSION = 1
_HEADER = struct.Struct(">4sBIQ")
#: The sealed blob header: magic, version, chunk size, plaintext length.
SEAL_HEADER_LEN = _HEADER.size
_MAX_PLAIN = (1 << 64) - 1
_NONCE_INDEX_LEN = 11
_FINAL = b"\x01"
_NOT_FINAL = b"\x00"

# --- domain strings (every derivation has its own) ----------------------------------------------

#: HKDF salt and info prefix of a node's X25519 key, derived from its ed25519 seed.
ENC_KEY_SALT = b"polnet enc key salt v1"
ENC_KEY_INFO = b"polnet enc key v1"
#: Domain string (first framed field of the HKDF info) of a wrap's ephemeral private key,
#: derived from the content key.
WRAP_EPHEMERAL_INFO = b"polnet key wrap ephemeral v1"
#: HKDF salt and info of the key-encryption key, derived from the X25519 shared secret.
WRAP_DOMAIN = b"polnet key wrap v1"
#: AAD of the wrap's AEAD.
WRAP_AAD = b"polnet key wrap aad v1"
#: Domain string (first framed field of the HKDF info) of a sealed blob's locator.
LOCATOR_INFO = b"polnet sealed locator v1"
#: Domain string (first framed field of the HKDF info) of a blob's AES-256-GCM key.
BLOB_KEY_INFO = b"polnet sealed blob key v1"

_Buffer = bytes | bytearray | memoryview

_WRAP_NONCE = bytes(12)  # every key-encryption key encrypts exactly one (content key) value


def _frame(*parts: bytes) -> bytes:
    """Unambiguous concatenation: each part prefixed by its u32 length."""
    return b"".join([len(p).to_bytes(4, "big") + p for p in parts])


# HKDF-SHA256 with the standard library's HMAC (OpenSSL's, in C). Per blob, a `cryptography`
# HKDF object (constructing it, then its extract + expand: about 3 to 5 us on the 2-core
# bench box) cost more than the one stdlib HMAC a single-block expand needs (1.5 to 2 us).
# The hash is bound here once, so a test that swaps this module's `hashlib` to watch how
# plaintexts are hashed does not see the HMACs' own hashing.
_HMAC_HASH = hashlib.sha256


def _extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 section 2.2): PRK = HMAC-SHA256(salt, IKM)."""
    return hmac.new(salt, ikm, _HMAC_HASH).digest()


def _expand(prk: bytes, info: bytes) -> bytes:
    """HKDF-Expand (RFC 5869 section 2.3) to L = 32 bytes. HKDF-Expand of a single 32-byte
    block IS HMAC(PRK, info | 0x01): OKM = T(1) = HMAC-SHA256(PRK, T(0) | info | 0x01) with
    T(0) the empty string, and L = HashLen = 32 needs no T(2). Domain separation lives in
    `info`: every caller frames it, its own domain string first."""
    return hmac.new(prk, info + b"\x01", _HMAC_HASH).digest()


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (extract, then expand) to 32 bytes: for inputs that are not already a
    uniformly random key (an X25519 shared secret) or that serve other purposes too (the
    ed25519 identity seed)."""
    return _expand(_extract(salt, ikm), info)


def _content_derive(content_key: bytes, domain: bytes, *fields: bytes) -> bytes:
    """Every key and name derived from a content key: HKDF-Expand(PRK = content key,
    frame(domain, *fields)), one HMAC. The content key is 32 uniformly random bytes, so it
    is used as the PRK itself (RFC 5869 section 3.3: extract may be skipped for a
    cryptographically strong key). The framed info, domain string first, keeps the blob
    keys, the locators and the wrap ephemerals apart."""
    return _expand(content_key, _frame(domain, *fields))


def _check_len(value: bytes, length: int, what: str, error: type[SealError]) -> None:
    if len(value) != length:
        raise error(f"{what} must be {length} bytes, got {len(value)}")


def _check_ids(chain_id: str, task_id: bytes) -> bytes:
    chain = chain_id.encode("utf-8")
    if len(chain) > MAX_ID_LEN or len(task_id) > MAX_ID_LEN:
        raise KeyWrapError(f"chain id and task id must be at most {MAX_ID_LEN} bytes")
    return chain


# --- node encryption keys -----------------------------------------------------------------------


def enc_private_key(identity_seed: bytes, generation: int) -> bytes:
    """A node's raw X25519 private key, derived from its 32-byte ed25519 seed.

    HKDF-SHA256 with its own salt and info (so the X25519 scalar is unrelated to the ed25519
    key as far as anyone can tell); the info ends with the generation, 0..MAX_GENERATION, so a
    node rotates its encryption key by registering the next generation's public key."""
    _check_len(identity_seed, IDENTITY_SEED_LEN, "identity seed", SealError)
    if not 0 <= generation <= MAX_GENERATION:
        raise SealError(f"key generation must be 0..{MAX_GENERATION}, got {generation}")
    return _hkdf(identity_seed, ENC_KEY_SALT, ENC_KEY_INFO + bytes([generation]))


def enc_public_key(private: bytes) -> bytes:
    """The raw X25519 public key of a raw X25519 private key."""
    _check_len(private, ENC_KEY_LEN, "X25519 private key", SealError)
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


# --- key wraps -----------------------------------------------------------------------------------


def _kek(shared: bytes, chain: bytes, task_id: bytes, epk: bytes, recipient_public: bytes) -> bytes:
    return _hkdf(shared, WRAP_DOMAIN, _frame(WRAP_DOMAIN, chain, task_id, epk, recipient_public))


def _ephemeral(content_key: bytes, chain: bytes, task_id: bytes, recipient_public: bytes) -> X25519PrivateKey:
    seed = _content_derive(content_key, WRAP_EPHEMERAL_INFO, chain, task_id, recipient_public)
    return X25519PrivateKey.from_private_bytes(seed)


def _exchange(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # a low-order point: the shared secret would be all zeros
        raise KeyWrapError("invalid X25519 public key") from exc


def wrap_content_key(content_key: bytes, recipient_public: bytes, chain_id: str, task_id: bytes) -> bytes:
    """Wrap a task's content key to one recipient's X25519 public key (WRAP_LEN bytes).

    Ephemeral-static X25519 with a derived ephemeral key (no randomness: the same inputs give
    the same wrap); the key-encryption key binds the chain, the task, the ephemeral and the
    recipient's public key, and the AEAD's AAD binds the chain and the task again."""
    _check_len(content_key, CONTENT_KEY_LEN, "content key", KeyWrapError)
    _check_len(recipient_public, ENC_KEY_LEN, "recipient public key", KeyWrapError)
    chain = _check_ids(chain_id, task_id)
    eph = _ephemeral(content_key, chain, task_id, recipient_public)
    epk = eph.public_key().public_bytes_raw()
    kek = _kek(_exchange(eph, recipient_public), chain, task_id, epk, recipient_public)
    sealed = ChaCha20Poly1305(kek).encrypt(_WRAP_NONCE, content_key, _frame(WRAP_AAD, chain, task_id))
    return epk + sealed


def unwrap_content_key(wrap: bytes, recipient_private: bytes, chain_id: str, task_id: bytes) -> bytes:
    """The content key inside `wrap`, or KeyWrapError (wrong length, another recipient, another
    chain or task, tampering, or a wrap that is not the canonical one for its content key)."""
    _check_len(wrap, WRAP_LEN, "key wrap", KeyWrapError)
    _check_len(recipient_private, ENC_KEY_LEN, "recipient private key", KeyWrapError)
    chain = _check_ids(chain_id, task_id)
    me = X25519PrivateKey.from_private_bytes(recipient_private)
    my_public = me.public_key().public_bytes_raw()
    epk, sealed = wrap[:ENC_KEY_LEN], wrap[ENC_KEY_LEN:]
    kek = _kek(_exchange(me, epk), chain, task_id, epk, my_public)
    try:
        content_key = ChaCha20Poly1305(kek).decrypt(_WRAP_NONCE, sealed, _frame(WRAP_AAD, chain, task_id))
    except InvalidTag as exc:
        raise KeyWrapError("key wrap does not open (wrong recipient, chain, task, or tampered)") from exc
    if _ephemeral(content_key, chain, task_id, my_public).public_key().public_bytes_raw() != epk:
        raise KeyWrapError("key wrap is not the canonical wrap of its content key")
    return content_key


# --- sealed blobs --------------------------------------------------------------------------------


def sealed_locator(content_key: bytes, digest: bytes) -> bytes:
    """The 32-byte network name of a sealed blob: HKDF-Expand(content key, frame(LOCATOR_INFO,
    digest)), one HMAC-SHA256 keyed by the content key over the plaintext's sha256 digest
    (unlinkable to the digest without the key; a PRF output apart from every blob key)."""
    _check_len(content_key, CONTENT_KEY_LEN, "content key", SealError)
    _check_len(digest, DIGEST_LEN, "digest", SealError)
    return _content_derive(content_key, LOCATOR_INFO, digest)


def _n_chunks(plain_len: int, chunk: int) -> int:
    return max(1, -(-plain_len // chunk))


def _check_chunk(chunk: int) -> None:
    if not 1 <= chunk <= MAX_SEAL_CHUNK:
        raise SealError(f"chunk size must be 1..{MAX_SEAL_CHUNK}, got {chunk}")


def sealed_size(plain_len: int, chunk: int = SEAL_CHUNK) -> int:
    """The exact length of `seal_blob` of a plain_len-byte plaintext."""
    _check_chunk(chunk)
    if not 0 <= plain_len <= _MAX_PLAIN:
        raise SealError(f"plaintext length out of range: {plain_len}")
    return SEAL_HEADER_LEN + plain_len + TAG_LEN * _n_chunks(plain_len, chunk)


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(_NONCE_INDEX_LEN, "big") + (_FINAL if final else _NOT_FINAL)


#: The nonce of a one-chunk blob's only chunk (chunk 0, final): most of a task's blobs.
_ONLY_NONCE = _nonce(0, True)


def _blob_aead(content_key: bytes, header: bytes, digest: bytes) -> AESGCM:
    """The blob's AEAD: its key, one HMAC, depends on the content key, the header (chunk
    layout and length) and the plaintext's digest."""
    return AESGCM(_content_derive(content_key, BLOB_KEY_INFO, header, digest))


# Output buffers. `bytes` is immutable, so the usual ways to build a sealed or opened blob
# copy it at least once: per-chunk `encrypt`/`decrypt` results joined into one object, or a
# bytearray filled in place and then converted. Where the installed `cryptography` has
# `encrypt_into`/`decrypt_into` (recent releases do; pyproject allows older ones, which take
# the joining path), a big blob is instead written chunk by chunk, through a writable
# `getbuffer()` view, into the buffer of an `io.BytesIO` made over `bytes(size)`, and
# `getvalue()` then hands out that buffer itself as the result. On CPython neither step
# copies: a BytesIO adopts an initial bytes object nobody else references, getbuffer() of an
# unshared buffer is a view of it, and getvalue() of an exactly full buffer with no view left
# returns it; `bytes(size)` is calloc'd, so a big blob's fresh pages are first touched by the
# AEAD writing the output. Each output byte is then written once, by the AEAD, straight into
# the result, and fresh memory is faulted in once per blob, not twice. Correctness does not
# depend on any of this: getbuffer() copies a buffer anyone else holds before exposing it,
# and where an interpreter copies in getvalue() the result is the same bytes, only slower.
# Small blobs keep the joining path: there, recycled cache-warm memory makes the copy cheaper
# than setting up a BytesIO.
_HAS_INTO = hasattr(AESGCM, "encrypt_into") and hasattr(AESGCM, "decrypt_into")
#: Blobs up to this many sealed bytes are built by concatenation even with `_HAS_INTO`.
_SMALL_BLOB = 1 << 15


def _fresh(size: int) -> tuple[io.BytesIO, memoryview]:
    """A BytesIO holding `size` zero bytes and a writable view of them. Release the view (and
    every slice of it) before calling getvalue(), or getvalue() copies."""
    out = io.BytesIO(bytes(size))
    return out, out.getbuffer()


class _Sealer:
    """Encrypts one blob's chunks in order (shared by seal_blob and seal_stream)."""

    def __init__(self, content_key: bytes, digest: bytes, size: int, chunk: int) -> None:
        _check_len(content_key, CONTENT_KEY_LEN, "content key", SealError)
        _check_len(digest, DIGEST_LEN, "digest", SealError)
        self.sealed_len = sealed_size(size, chunk)  # validates both
        self.header = _HEADER.pack(SEAL_MAGIC, SEAL_VERSION, chunk, size)
        self.n_chunks = _n_chunks(size, chunk)
        self.chunk = chunk
        self.size = size
        self._aead = _blob_aead(content_key, self.header, digest)

    def chunk_len(self, index: int) -> int:
        return min(self.chunk, self.size - index * self.chunk)

    def seal(self, index: int, plain: _Buffer) -> bytes:
        return self._aead.encrypt(_nonce(index, index == self.n_chunks - 1), plain, self.header)

    def pieces(self, plain: memoryview) -> Iterator[bytes]:
        """The header, then each chunk's sealed bytes, in order: one fresh object per chunk,
        so memory is recycled chunk by chunk (no 64 MiB output, no copy of the whole)."""
        yield self.header
        chunk = self.chunk
        for i in range(self.n_chunks):
            yield self.seal(i, plain[i * chunk : (i + 1) * chunk])

    def seal_all(self, plain: memoryview) -> bytes:
        """The whole sealed blob of `plain` (a byte view of `size` bytes)."""
        chunk, n, header = self.chunk, self.n_chunks, self.header
        if not _HAS_INTO or self.sealed_len <= _SMALL_BLOB:
            if n == 1:  # most blobs: one AEAD call, no per-chunk machinery
                return header + self._aead.encrypt(_ONLY_NONCE, plain, header)
            return b"".join([header, *(self.seal(i, plain[i * chunk : (i + 1) * chunk]) for i in range(n))])
        encrypt_into = self._aead.encrypt_into
        out, view = _fresh(self.sealed_len)
        try:
            view[:SEAL_HEADER_LEN] = header
            pos = SEAL_HEADER_LEN
            for i in range(n):
                start = i * chunk
                length = min(chunk, self.size - start)
                end = pos + length + TAG_LEN
                encrypt_into(_nonce(i, i == n - 1), plain[start : start + length], header, view[pos:end])
                pos = end
        finally:
            view.release()
        return out.getvalue()


def seal_blob(content_key: bytes, plaintext: _Buffer, chunk: int = SEAL_CHUNK,
              digest: bytes | None = None) -> bytes:
    """Seal one blob (deterministic: the same key and plaintext give the same bytes).

    `digest` is sha256(plaintext) where the caller already has it (a blob's id is its
    digest, so every store has it): then the plaintext is not hashed here at all, only read
    once by the AEAD. It is trusted, not checked: a wrong digest gives a blob that
    `open_blob` rejects under every digest (under the wrong one the plaintext does not hash
    to it; under the right one the chunks do not authenticate, the blob key being derived
    from the digest). Without it, the plaintext is hashed once. Either way the output is
    the same bytes for the right digest."""
    if digest is None:
        digest = hashlib.sha256(plaintext).digest()
    view = memoryview(plaintext).cast("B")
    return _Sealer(content_key, digest, len(view), chunk).seal_all(view)


def seal_pieces(content_key: bytes, plaintext: _Buffer, digest: bytes, chunk: int = SEAL_CHUNK
                ) -> Iterator[bytes]:
    """`seal_blob` as pieces: the 17-byte header, then one sealed chunk at a time (their
    concatenation is exactly `seal_blob(content_key, plaintext, chunk, digest)`). For big
    blobs written to a file or a socket as they are made: no whole-blob output is ever
    allocated (a fresh 64 MiB buffer costs 16,384 page faults, more than encrypting it) and
    each chunk's memory is reused for the next. `digest` is required (every caller holding a
    blob has its id) and trusted as in seal_blob. Arguments are checked before the first
    piece is produced."""
    view = memoryview(plaintext).cast("B")
    sealer = _Sealer(content_key, digest, len(view), chunk)  # raises here, not on first next()
    return sealer.pieces(view)


def seal_stream(content_key: bytes, digest: bytes, size: int, read: Callable[[int], bytes],
                write: Callable[[bytes], object], chunk: int = SEAL_CHUNK) -> None:
    """Seal a file already hashed (digest = sha256 of its `size` bytes) as it is read; the
    bytes written are exactly `seal_blob` of the file. Reads exactly `size` bytes (`read(n)` may
    return fewer than n; `write`'s return value is ignored, so file.write fits). The input is
    hashed again on the way (a file, unlike a blob in memory, can change or end early between
    the hash and the read): if it ended early or changed since it was hashed, SealError is
    raised after the last chunk (what was written is then not a valid sealed blob)."""
    sealer = _Sealer(content_key, digest, size, chunk)
    write(sealer.header)
    check = hashlib.sha256()
    for i in range(sealer.n_chunks):
        want = sealer.chunk_len(i)
        buf = bytearray()
        while len(buf) < want:
            piece = read(want - len(buf))
            if not piece:
                raise SealError(f"input ended at {i * chunk + len(buf)} of {size} bytes")
            buf += piece
        if len(buf) != want:
            raise SealError("read returned more bytes than asked for")
        check.update(buf)
        write(sealer.seal(i, buf))
    if check.digest() != digest:
        raise SealError("input does not match its digest (changed since it was hashed?)")


def _parse_header(header: bytes, max_plain: int) -> tuple[int, int]:
    """(chunk size, plaintext length) of a sealed header, checked before anything is allocated."""
    magic, version, chunk, size = _HEADER.unpack(header)
    if magic != SEAL_MAGIC:
        raise SealedBlobError("not a sealed blob (bad magic)")
    if version != SEAL_VERSION:
        raise SealedBlobError(f"unsupported sealed blob version {version}")
    if not 1 <= chunk <= MAX_SEAL_CHUNK:
        raise SealedBlobError(f"sealed blob announces chunk size {chunk}, outside 1..{MAX_SEAL_CHUNK}")
    if size > max_plain:
        raise SealedBlobError(f"sealed blob announces {size} plaintext bytes, over the limit {max_plain}")
    return chunk, size


def _check_open_args(content_key: bytes, digest: bytes, max_plain: int) -> None:
    # Caller errors, not evidence about the blob: SealError, not SealedBlobError.
    _check_len(content_key, CONTENT_KEY_LEN, "content key", SealError)
    _check_len(digest, DIGEST_LEN, "digest", SealError)
    if max_plain < 0:
        raise SealError("max_plain must be >= 0")


def _tag_error(index: int) -> SealedBlobError:
    return SealedBlobError(f"sealed chunk {index} does not authenticate (tampered, "
                           "reordered, truncated, from another blob, or wrong key/digest)")


def _open_chunk(aead: AESGCM, header: bytes, index: int, final: bool, data: _Buffer) -> bytes:
    try:
        return aead.decrypt(_nonce(index, final), data, header)
    except InvalidTag as exc:
        raise _tag_error(index) from exc


def _decrypt(content_key: bytes, digest: bytes, sealed: _Buffer, max_plain: int,
             absorb: Callable[[_Buffer], object] | None) -> bytes:
    """`open_blob` less its last step: parse and bound the header, then authenticate and
    decrypt every chunk in order, passing each chunk's plaintext to `absorb` (a hash's
    update) as soon as it is decrypted, while it is still in cache. It does NOT check the
    plaintext against `digest`; only open_blob (which does, right after) and the benchmark
    (timing the decrypt path alone) call it."""
    _check_open_args(content_key, digest, max_plain)
    view = memoryview(sealed).cast("B")
    if len(view) < SEAL_HEADER_LEN:
        raise SealedBlobError("sealed blob shorter than its header")
    header = bytes(view[:SEAL_HEADER_LEN])
    chunk, size = _parse_header(header, max_plain)
    if len(view) != sealed_size(size, chunk):
        raise SealedBlobError(f"sealed blob is {len(view)} bytes, its header announces "
                              f"{sealed_size(size, chunk)} (truncated or padded)")
    aead = _blob_aead(content_key, header, digest)
    n = _n_chunks(size, chunk)
    if not _HAS_INTO or size <= _SMALL_BLOB:
        if n == 1:  # one chunk: `decrypt` returns the result itself
            plain = _open_chunk(aead, header, 0, True, view[SEAL_HEADER_LEN:])
            if absorb is not None:
                absorb(plain)
            return plain
        parts: list[bytes] = []
        pos = SEAL_HEADER_LEN
        for i in range(n):
            end = pos + min(chunk, size - i * chunk) + TAG_LEN
            plain = _open_chunk(aead, header, i, i == n - 1, view[pos:end])
            if absorb is not None:
                absorb(plain)
            parts.append(plain)
            pos = end
        return b"".join(parts)
    decrypt_into = aead.decrypt_into
    out, plain_view = _fresh(size)
    try:
        pos = SEAL_HEADER_LEN
        for i in range(n):
            start = i * chunk
            length = min(chunk, size - start)
            end = pos + length + TAG_LEN
            with plain_view[start : start + length] as target:
                try:
                    decrypt_into(_nonce(i, i == n - 1), view[pos:end], header, target)
                except InvalidTag as exc:
                    raise _tag_error(i) from exc
                if absorb is not None:
                    absorb(target)
            pos = end
    finally:
        plain_view.release()
    return out.getvalue()


def _decrypt_pieces(content_key: bytes, digest: bytes, pieces: Iterable[_Buffer], max_plain: int,
                    absorb: Callable[[_Buffer], object] | None) -> Iterator[bytes]:
    """`_decrypt` over a sealed blob given as aligned pieces (the header, then exactly one
    sealed chunk per piece, as `seal_pieces` makes them and `sealed_piece_sizes` names
    them): yields each chunk's plaintext once it authenticates. Like `_decrypt`, it does
    not check the digest; `open_pieces` does."""
    _check_open_args(content_key, digest, max_plain)
    it = iter(pieces)
    first = next(it, b"")
    if len(first) != SEAL_HEADER_LEN:  # checked before anything is copied
        raise SealedBlobError(f"first piece must be the {SEAL_HEADER_LEN}-byte header, "
                              f"got {len(first)} bytes")
    header = bytes(first)
    chunk, size = _parse_header(header, max_plain)
    aead = _blob_aead(content_key, header, digest)
    n = _n_chunks(size, chunk)
    for i in range(n):
        data = next(it, None)
        want = min(chunk, size - i * chunk) + TAG_LEN
        if data is None or len(data) != want:
            got = "none" if data is None else f"{len(data)} bytes"
            raise SealedBlobError(f"sealed chunk {i} of {n} must be a piece of {want} bytes, got {got}")
        plain = _open_chunk(aead, header, i, i == n - 1, data)
        if absorb is not None:
            absorb(plain)
        yield plain
    if next(it, None) is not None:
        raise SealedBlobError(f"a piece after the sealed blob's final chunk ({n} chunks)")


def sealed_piece_sizes(header: bytes, max_plain: int) -> list[int]:
    """The sizes of the pieces after `header` that `open_pieces` takes (one per chunk), from
    a checked header: how a reader of a sealed file cuts it."""
    chunk, size = _parse_header(header, max_plain)
    return [min(chunk, size - i * chunk) + TAG_LEN for i in range(_n_chunks(size, chunk))]


def open_pieces(content_key: bytes, digest: bytes, pieces: Iterable[_Buffer], max_plain: int
                ) -> Iterator[bytes]:
    """Streaming `open_blob` for a sealed blob given as aligned pieces (see
    `_decrypt_pieces`): yields each chunk's plaintext as soon as it authenticates, and
    raises SealedBlobError after the last one if the plaintext does not hash to `digest`.
    Released plaintext is provisional until the generator is exhausted without an error
    (write it to a temporary file, rename it after). Memory: one chunk at a time."""
    check = hashlib.sha256()
    yield from _decrypt_pieces(content_key, digest, pieces, max_plain, check.update)
    if check.digest() != digest:
        raise SealedBlobError("sealed blob's plaintext does not match its digest")


def open_blob(content_key: bytes, digest: bytes, sealed: _Buffer, max_plain: int) -> bytes:
    """Open a whole sealed blob whose plaintext must hash to `digest` and be at most max_plain
    bytes; SealedBlobError if it does not open (the plaintext is never partly returned).

    The digest check is the content-addressing check (a content-key holder could seal other
    bytes under a digest), so it is never skipped; it costs no pass of its own: each chunk is
    hashed right after it is decrypted."""
    check = hashlib.sha256()
    plain = _decrypt(content_key, digest, sealed, max_plain, check.update)
    if check.digest() != digest:
        raise SealedBlobError("sealed blob's plaintext does not match its digest")
    return plain


class BlobOpener:
    """Streaming `open_blob` for big blobs arriving in pieces.

    `feed` returns the plaintext of every chunk completed so far; each chunk is authenticated
    before it is released, but the whole blob's digest can only be checked by `finish`: treat
    released plaintext as provisional until finish() returns. After any error the opener is
    dead (every later call raises)."""

    def __init__(self, content_key: bytes, digest: bytes, max_plain: int) -> None:
        _check_open_args(content_key, digest, max_plain)
        self._key = content_key
        self._digest = digest
        self._max_plain = max_plain
        self._buf = bytearray()
        self._header: bytes | None = None
        self._aead: AESGCM | None = None
        self._chunk = 0
        self._size = 0
        self._n_chunks = 0
        self._index = 0
        self._hash = hashlib.sha256()
        self._failed: SealedBlobError | None = None

    def _fail(self, message: str) -> SealedBlobError:
        self._failed = SealedBlobError(message)
        return self._failed

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes of the sealed blob; return the plaintext now released."""
        if self._failed is not None:
            raise SealedBlobError(f"opener already failed: {self._failed}")
        try:
            return self._feed(data)
        except SealedBlobError as exc:
            self._failed = exc
            raise

    def _feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        if self._header is None:
            if len(buf) < SEAL_HEADER_LEN:
                return b""
            header = bytes(buf[:SEAL_HEADER_LEN])
            self._chunk, self._size = _parse_header(header, self._max_plain)
            self._n_chunks = _n_chunks(self._size, self._chunk)
            self._aead = _blob_aead(self._key, header, self._digest)
            self._header = header
            del buf[:SEAL_HEADER_LEN]
        assert self._aead is not None
        parts: list[bytes] = []
        pos = 0
        view = memoryview(buf)  # chunks are decrypted from it, not from sliced copies
        try:
            while self._index < self._n_chunks:
                need = min(self._chunk, self._size - self._index * self._chunk) + TAG_LEN
                if len(buf) - pos < need:
                    break
                final = self._index == self._n_chunks - 1
                plain = _open_chunk(self._aead, self._header, self._index, final, view[pos : pos + need])
                self._hash.update(plain)
                parts.append(plain)
                pos += need
                self._index += 1
        finally:
            view.release()
        del buf[:pos]
        if self._index == self._n_chunks and buf:
            raise SealedBlobError(f"{len(buf)} bytes after the sealed blob's final chunk")
        return b"".join(parts)

    def finish(self) -> None:
        """Check the blob is complete and its plaintext hashes to the digest."""
        if self._failed is not None:
            raise SealedBlobError(f"opener already failed: {self._failed}")
        if self._header is None or self._index < self._n_chunks:
            raise self._fail(f"sealed blob incomplete: {self._index} of {self._n_chunks or '?'} chunks")
        if self._hash.digest() != self._digest:
            raise self._fail("sealed blob's plaintext does not match its digest")
