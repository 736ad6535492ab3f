"""Typed failures of the transport, under the project's error hierarchy.

Blob failures subclass `protocol.errors.BlobError` so a core-facing shell can treat
"no valid blob" uniformly; the subclasses say whose fault it was, which decides
whether the serving peer is penalised (wrong hash, oversized, closed mid-body,
garbage) or merely skipped (not found, busy, too slow, stream reset or refused).
"""

from __future__ import annotations

from protocol.errors import BlobError, PolnetError
from protocol.errors import BlobUnavailable as ProtocolBlobUnavailable


class TransportError(PolnetError):
    """The network layer could not do what was asked."""


class PeerUnavailable(TransportError):
    """No connection to the peer could be made or kept."""


class ListenFailed(TransportError):
    """The listen address could not be bound (usually: the port is in use)."""


class NotRunning(TransportError):
    """The transport was used before it started or after it stopped."""


class BlobNotFound(BlobError):
    """The peer does not have a blob with this digest."""


class BlobBusy(BlobError):
    """The peer is serving its maximum number of blob requests."""


class BlobTooLarge(BlobError):
    """The blob is bigger than the caller's cap (announced or actually sent)."""


class BlobOversized(BlobTooLarge):
    """The peer broke the protocol: announced OK for more than asked, or sent extra bytes."""


class BlobTruncated(BlobError):
    """The stream ended before the announced size, or sent bytes past it."""


class BlobHashMismatch(BlobError):
    """The bytes received do not hash to the digest that was asked for."""


class BlobTimeout(BlobError):
    """The peer did not deliver the blob within the deadline."""


class BlobProtocolError(BlobError):
    """The peer's answer was not a valid blob-protocol message."""


class BlobStreamFailed(BlobError):
    """The stream could not be opened or was reset (the peer is down or restarting, has
    no known address, refused us, or the connection broke): no proof that the peer
    lied, so it is not penalised."""


class BlobUnavailable(ProtocolBlobUnavailable):
    """No peer supplied a valid blob; `reasons` says what each one did."""

    def __init__(self, digest: bytes, reasons: dict[str, str]) -> None:
        super().__init__(f"blob {digest.hex()[:16]} unavailable: {reasons or 'no peers'}")
        self.digest = digest
        self.reasons = reasons
