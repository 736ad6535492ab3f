"""The project's error hierarchy.

One root (`PolnetError`) so that a shell can catch "anything polnet refused" without
catching programming errors. Decoding errors are split finely because a node reacts to
them differently: an oversized or malformed message is the peer's fault and costs it
gossip score, a wrong chain id is usually a misconfigured peer, and a bad signature is
hostile.
"""

from __future__ import annotations


class PolnetError(Exception):
    """Root of every error polnet raises on purpose."""


# --- wire ------------------------------------------------------------------------------


class DecodeError(PolnetError):
    """Bytes from outside could not be turned into a valid message."""


class MessageTooLarge(DecodeError):
    """The input exceeds the total size cap; rejected before any parsing."""


class Malformed(DecodeError):
    """Not canonical msgpack of the expected shape (bad types, lengths, extra data)."""


class LimitExceeded(Malformed):
    """A container, string, bytes field, depth or integer is out of its bound."""


class NonCanonical(Malformed):
    """Valid msgpack that is not the one canonical encoding of its value."""


class UnknownType(DecodeError):
    """The envelope names a message type tag this node does not know."""


class UnsupportedVersion(DecodeError):
    """The envelope's protocol version is not one this node speaks."""


class WrongChain(DecodeError):
    """The envelope belongs to another chain id (another network or a testnet)."""


class BadSignature(DecodeError):
    """The signature does not verify for the sender over this message's signing root."""


# --- protocol rules -----------------------------------------------------------------------


class ValidationError(PolnetError):
    """A well-formed message or transaction breaks a protocol rule."""


class ReplayError(ValidationError):
    """A nonce or vote position that was already used (a replay or a stale message)."""


class SpecError(ValidationError):
    """A task spec is outside the whitelist or its limits."""


class BlobError(PolnetError):
    """A content-addressed blob is missing, oversized, truncated or has the wrong hash."""


class BlobUnavailable(BlobError):
    """No peer served a blob in time (as opposed to one that came back wrong): saying
    nothing about its content, it never counts as evidence against whoever committed it."""


# --- private tasks (protocol/sealing.py) ---------------------------------------------------


class SealError(PolnetError):
    """Sealing or opening private-task content failed: a bad key, a bad argument, or a
    sealed input that does not open."""


class KeyWrapError(SealError):
    """A content-key wrap is malformed (wrong length, bad ephemeral key), was made for another
    recipient, chain or task, or was tampered with; the key inside is never released."""


class SealedBlobError(SealError, BlobError):
    """A sealed blob does not open: bad header, announced size over the caller's limit, a chunk
    that fails authentication (tampered, reordered, dropped, truncated, spliced from another
    blob, wrong key) or a plaintext whose sha256 is not the expected digest. It is also a
    BlobError, so code that handles bad blobs handles bad sealed blobs."""


# --- local configuration -------------------------------------------------------------------


class ConfigError(PolnetError):
    """A config file, CLI argument or genesis file is invalid."""


class KeyFileError(ConfigError):
    """A key file is missing, corrupt, of the wrong type, or readable by others."""


class Unavailable(PolnetError):
    """Something a command needs is not there or not answering (a local node that is
    not running): the input was fine, so run it again once the service is up."""
