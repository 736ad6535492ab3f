"""The signed envelope every network message travels in.

Wire form (canonical msgpack array):
    [version: u8, chain_id: str, type_tag: u16, sender: bytes32, body: bin, signature: bytes64]

`body` is the canonical encoding of the message record, carried as a byte string so
that the signature covers exactly the bytes that were sent and decoding never has to
re-encode the body to check a signature.

Signing root = SHA-256(DOMAIN || len(chain_id) || chain_id || type_tag(u16be) ||
sender || body). The chain id and the type tag are in the domain so that a signature
made for one network or one message type can never be replayed as another.

Validation runs cheap checks first (size, outer shape, version, chain id, known type,
body schema, canonical form) and the ed25519 verify last, so junk costs a peer almost
nothing to reject. The canonical check is one C-level re-encode of the whole envelope,
done only after the schema has accepted the body: at that point the value is known to
hold nothing the plain packer could encode two ways, so the generic (Python-level)
normalising path is not needed and ingest stays within a few percent of a bare verify.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from protocol.encoding import pack_plain, sha256, unpack_shallow
from protocol.errors import (
    BadSignature,
    LimitExceeded,
    Malformed,
    NonCanonical,
    UnsupportedVersion,
    WrongChain,
)
from protocol.identity import Keypair, verify
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.schema import from_wire, message_type, to_wire

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
SIGNING_DOMAIN = b"polnet/sig/v1\x00"
#: Longest chain id, in UTF-8 bytes (its length is one byte of the signing root).
MAX_CHAIN_ID_LEN = 64
ENVELOPE_FIELDS = 6
MAX_TYPE_TAG = 2**16 - 1


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded, verified message with its provenance."""

    version: int
    chain_id: str
    sender: bytes
    body: Any
    signature: bytes
    raw: bytes

    @property
    def message_id(self) -> bytes:
        """Content id of the whole envelope, used by the seen-message cache."""
        return sha256(self.raw)


def signing_root(chain_id: str, type_tag: int, sender: bytes, body: bytes) -> bytes:
    """The 32 bytes an envelope's signature covers.

    Chain id and type tag are hashed in (length-prefixed, fixed width) so the same body
    bytes signed for another network or another message type give another root.
    """
    cid = _chain_id_bytes(chain_id)
    if not 0 < type_tag <= MAX_TYPE_TAG:
        raise LimitExceeded(f"type tag {type_tag} outside 1..{MAX_TYPE_TAG}")
    h = hashlib.sha256(SIGNING_DOMAIN)
    h.update(len(cid).to_bytes(1, "big"))
    h.update(cid)
    h.update(type_tag.to_bytes(2, "big"))
    h.update(sender)
    h.update(body)
    return h.digest()


def _chain_id_bytes(chain_id: str) -> bytes:
    try:
        cid = chain_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Malformed(f"chain id is not valid UTF-8: {exc}") from None
    if not 0 < len(cid) <= MAX_CHAIN_ID_LEN:
        raise LimitExceeded(f"chain id must be 1..{MAX_CHAIN_ID_LEN} UTF-8 bytes")
    return cid


def seal(msg: Any, key: Keypair, chain_id: str, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode and sign a registered message; the bytes are ready to publish."""
    tag: int = type(msg).TYPE_TAG
    # to_wire has validated every bound, so the value is already in canonical shape.
    body = pack_plain(to_wire(msg))
    sig = key.sign(signing_root(chain_id, tag, key.public, body))
    if not 0 <= version <= 255:
        raise LimitExceeded(f"protocol version {version} is not a u8")
    return pack_plain([version, chain_id, tag, key.public, body, sig])


def open_envelope(data: bytes, chain_id: str, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode and verify an envelope, or raise the DecodeError that says why not."""
    outer = unpack_shallow(data, limits)
    version, env_chain, tag, sender, body, sig = _outer_fields(outer)
    # Rule: only versions this node speaks.
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(f"protocol version {version} not supported")
    # Rule: the message belongs to our chain.
    if env_chain != chain_id:
        raise WrongChain(f"message for chain {env_chain!r}, this node is on {chain_id!r}")
    # Rule: a known message type (raises UnknownType).
    cls = message_type(tag)
    # Rule: the body matches the type's schema (bounds every field and the depth).
    body_value = unpack_shallow(body, limits)
    msg = from_wire(cls, body_value)
    # Rule: envelope and body are the canonical encoding of their values. Sound with the
    # plain packer because the outer fields are typed scalars and the body passed its
    # schema: re-encoding the outer array re-encodes the body's bytes verbatim, and
    # those bytes are canonical iff they equal the plain encoding of what they decoded to.
    if pack_plain(outer) != data or pack_plain(body_value) != body:
        raise NonCanonical("envelope is not the canonical encoding of its value")
    # Rule, last because it is the expensive one: the sender signed exactly this.
    if not verify(sender, sig, signing_root(env_chain, tag, sender, body)):
        raise BadSignature("signature does not verify for the sender")
    return Envelope(version, env_chain, sender, msg, sig, bytes(data))


def _outer_fields(outer: Any) -> tuple[int, str, int, bytes, bytes, bytes]:
    if type(outer) is not list or len(outer) != ENVELOPE_FIELDS:
        raise Malformed(f"envelope must be an array of {ENVELOPE_FIELDS} fields")
    version, env_chain, tag, sender, body, sig = outer
    if type(version) is not int or not 0 <= version < 256:
        raise Malformed("envelope version must be a u8")
    if type(env_chain) is not str or not 0 < len(env_chain.encode("utf-8")) <= MAX_CHAIN_ID_LEN:
        raise Malformed(f"envelope chain id must be a string of 1..{MAX_CHAIN_ID_LEN} bytes")
    if type(tag) is not int or not 0 < tag <= MAX_TYPE_TAG:
        raise Malformed("envelope type tag must be a u16")
    if type(sender) is not bytes or len(sender) != 32:
        raise Malformed("envelope sender must be a 32-byte ed25519 public key")
    if type(body) is not bytes:
        raise Malformed("envelope body must be a byte string")
    if type(sig) is not bytes or len(sig) != 64:
        raise Malformed("envelope signature must be 64 bytes")
    return version, env_chain, tag, sender, body, sig
