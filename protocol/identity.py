"""Node identity: one ed25519 key for the libp2p host and for protocol signatures.

The node id is the libp2p peer id of the key (identity multihash of the protobuf
PublicKey, base58btc: the familiar "12D3KooW..."), so an operator sees the same id in
libp2p logs and in the ledger. Key *generation* needs OS randomness and therefore lives
in node/keys; here keys are only built from explicit seed or private bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.encoding import sha256
from protocol.errors import Malformed

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
SEED_LEN = 32

# libp2p's protobuf PublicKey{Type: Ed25519 (=1), Data: 32 bytes}: field 1 varint,
# field 2 length-delimited. The identity multihash (code 0x00) wraps it, since it is
# shorter than 42 bytes.
_PB_ED25519_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
_IDENTITY_MULTIHASH_PREFIX = bytes([0x00, 0x24])
_B58_ALPHABET = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = bytearray()
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return (b"1" * pad + bytes(reversed(out))).decode("ascii")


def _b58decode(text: str) -> bytes:
    if not text.isascii():
        raise Malformed("node id must be base58 (ASCII)")
    n = 0
    for ch in text.encode("ascii"):
        idx = _B58_ALPHABET.find(ch)
        if idx < 0:
            raise Malformed(f"invalid base58 character {chr(ch)!r}")
        n = n * 58 + idx
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * pad + body


def peer_id_bytes(public_key: bytes) -> bytes:
    """The raw libp2p peer id (identity multihash) of an ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_LEN:
        raise Malformed("ed25519 public key must be 32 bytes")
    return _IDENTITY_MULTIHASH_PREFIX + _PB_ED25519_PREFIX + public_key


def node_id(public_key: bytes) -> str:
    """Printable node id: the libp2p peer id string of the key ("12D3KooW...")."""
    return _b58encode(peer_id_bytes(public_key))


def public_key_from_node_id(text: str) -> bytes:
    """Inverse of `node_id`, for ed25519 peer ids only."""
    if len(text) > 64:
        raise Malformed("node id too long")
    raw = _b58decode(text)
    prefix = _IDENTITY_MULTIHASH_PREFIX + _PB_ED25519_PREFIX
    if len(raw) != len(prefix) + PUBLIC_KEY_LEN or not raw.startswith(prefix):
        raise Malformed("not an ed25519 libp2p peer id")
    return raw[len(prefix) :]


@dataclass(frozen=True)
class Keypair:
    """An ed25519 signing key with its public half cached as raw bytes."""

    private: Ed25519PrivateKey = field(repr=False)
    public: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        """Deterministic key from 32 bytes (the ed25519 'private key' seed)."""
        if len(seed) != SEED_LEN:
            raise Malformed("ed25519 seed must be 32 bytes")
        priv = Ed25519PrivateKey.from_private_bytes(seed)
        pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(priv, pub)

    @classmethod
    def derive(cls, label: str) -> Keypair:
        """Deterministic test/simulation key from a label (never for real funds)."""
        return cls.from_seed(sha256(b"polnet/derive-key/v1\x00" + label.encode("utf-8")))

    def seed(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    @property
    def node_id(self) -> str:
        return node_id(self.public)


class _KeyCache:
    """Bounded cache of parsed public keys: parsing costs about as much as hashing the
    message, and the same few hundred validators sign almost everything."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[bytes, Ed25519PublicKey] = OrderedDict()

    def get(self, raw: bytes) -> Ed25519PublicKey:
        key = self._keys.get(raw)
        if key is None:
            if len(raw) != PUBLIC_KEY_LEN:
                raise Malformed("ed25519 public key must be 32 bytes")
            try:
                key = Ed25519PublicKey.from_public_bytes(raw)
            except ValueError as exc:
                raise Malformed(f"invalid ed25519 public key: {exc}") from exc
            self._keys[raw] = key
            if len(self._keys) > self._capacity:
                self._keys.popitem(last=False)
        return key


_KEYS = _KeyCache()


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True when `signature` is a valid ed25519 signature of `data` by `public_key`."""
    if len(signature) != SIGNATURE_LEN:
        return False
    try:
        _KEYS.get(public_key).verify(signature, data)
    except (InvalidSignature, Malformed):
        return False
    return True
