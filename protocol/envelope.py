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

from dataclasses import dataclass
from functools import lru_cache
from hashlib import sha256 as _sha256
from typing import Any, NoReturn

from protocol.encoding import pack_plain, sha256, unpack_shallow
from protocol.errors import (
    BadSignature,
    LimitExceeded,
    Malformed,
    NonCanonical,
    UnsupportedVersion,
    WrongChain,
)
from protocol.identity import PUBLIC_KEY_LEN, SIGNATURE_LEN, Keypair, verify
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.schema import frozen_constructor, message_type, record_decoder, to_wire

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


_new_envelope = frozen_constructor(Envelope)


def signing_root(chain_id: str, type_tag: int, sender: bytes, body: bytes) -> bytes:
    """The 32 bytes an envelope's signature covers.

    Chain id and type tag are hashed in (length-prefixed, fixed width) so the same body
    bytes signed for another network or another message type give another root.
    """
    return _sha256(_root_prefix(chain_id, type_tag) + sender + body).digest()


@lru_cache(maxsize=1024)
def _root_prefix(chain_id: str, type_tag: int) -> bytes:
    """DOMAIN || len(chain_id) || chain_id || type_tag: fixed per (chain, type), so cached
    (bounded: a node verifies messages of its own chain and the registered types only)."""
    try:
        cid = chain_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Malformed(f"chain id is not valid UTF-8: {exc}") from None
    if not 0 < len(cid) <= MAX_CHAIN_ID_LEN:
        raise LimitExceeded(f"chain id must be 1..{MAX_CHAIN_ID_LEN} UTF-8 bytes")
    if not 0 < type_tag <= MAX_TYPE_TAG:
        raise LimitExceeded(f"type tag {type_tag} outside 1..{MAX_TYPE_TAG}")
    return SIGNING_DOMAIN + bytes([len(cid)]) + cid + type_tag.to_bytes(2, "big")


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
    # Rule: the outer value is [u8, str, u16, bytes32, bytes, bytes64].
    if type(outer) is not list or len(outer) != ENVELOPE_FIELDS:
        raise Malformed(f"envelope must be an array of {ENVELOPE_FIELDS} fields")
    version, env_chain, tag, sender, body, sig = outer
    if not (
        type(version) is int
        and type(env_chain) is str
        and type(tag) is int
        and 0 < tag <= MAX_TYPE_TAG
        and type(sender) is bytes
        and len(sender) == PUBLIC_KEY_LEN
        and type(body) is bytes
        and type(sig) is bytes
        and len(sig) == SIGNATURE_LEN
    ):
        _raise_outer_error(outer)
    # Rule: only versions this node speaks.
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(f"protocol version {version} not supported")
    # Rule: the message belongs to our chain.
    if env_chain != chain_id:
        _raise_chain_error(env_chain, chain_id)
    # Rule: a known message type (raises UnknownType).
    cls = message_type(tag)
    # Rule: the body matches the type's schema (bounds every field and the depth).
    body_value = unpack_shallow(body, limits)
    msg = record_decoder(cls)(body_value, 0)
    # Rule: envelope and body are the canonical encoding of their values. Sound with the
    # plain packer because the outer fields are typed scalars and the body passed its
    # schema: re-encoding the outer array re-encodes the body's bytes verbatim, and
    # those bytes are canonical iff they equal the plain encoding of what they decoded to.
    if pack_plain(outer) != data or pack_plain(body_value) != body:
        raise NonCanonical("envelope is not the canonical encoding of its value")
    # Rule, last because it is the expensive one: the sender signed exactly this.
    if not verify(sender, sig, _sha256(_root_prefix(env_chain, tag) + sender + body).digest()):
        raise BadSignature("signature does not verify for the sender")
    raw = data if type(data) is bytes else bytes(data)
    return _new_envelope(version, env_chain, sender, msg, sig, raw)


def _raise_outer_error(outer: list[Any]) -> NoReturn:
    """Name the first outer field that is wrong (off the hot path)."""
    version, env_chain, tag, sender, body, _ = outer
    if type(version) is not int:
        raise Malformed("envelope version must be an integer")
    if type(env_chain) is not str:
        raise Malformed("envelope chain id must be a string")
    if type(tag) is not int or not 0 < tag <= MAX_TYPE_TAG:
        raise Malformed("envelope type tag must be a u16")
    if type(sender) is not bytes or len(sender) != PUBLIC_KEY_LEN:
        raise Malformed("envelope sender must be a 32-byte ed25519 public key")
    if type(body) is not bytes:
        raise Malformed("envelope body must be a byte string")
    raise Malformed("envelope signature must be 64 bytes")


def _raise_chain_error(env_chain: str, chain_id: str) -> NoReturn:
    if not 0 < len(env_chain.encode("utf-8")) <= MAX_CHAIN_ID_LEN:
        raise Malformed(f"envelope chain id must be a string of 1..{MAX_CHAIN_ID_LEN} bytes")
    raise WrongChain(f"message for chain {env_chain!r}, this node is on {chain_id!r}")
