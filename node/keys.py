"""Node key files: generation, atomic 0600 storage, optional passphrase encryption.

The node's ed25519 key is its identity (libp2p host key and protocol signing key), so
the file is treated like an ssh private key: written atomically with mode 0600 (a
crash leaves the old file or the new one, never half of one), refused when group or
world can read it, and optionally sealed under a passphrase.

File format: a small JSON document, versioned so it can evolve.

    {"format": "polnet-key", "version": 1, "type": "ed25519", "public": "<hex>",
     "seed": "<hex>"}                                       # plaintext
    {"format": "polnet-key", "version": 1, "type": "ed25519", "public": "<hex>",
     "kdf": {"name": "scrypt", "log2_n": 15, "r": 8, "p": 1, "salt": "<hex>"},
     "cipher": {"name": "chacha20-poly1305", "nonce": "<hex>"},
     "ciphertext": "<hex>"}                                 # encrypted

The public key stays readable without the passphrase (so `polnet` can print the node
id), and the whole header is the AEAD's associated data: changing the public key or
weakening the KDF parameters in the file makes decryption fail instead of silently
producing a different identity. OS randomness (key generation, salts, nonces) lives
here, never in protocol/.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from protocol.errors import KeyFileError, PolnetError
from protocol.identity import SEED_LEN, Keypair

FORMAT = "polnet-key"
VERSION = 1
KEY_TYPE = "ed25519"
FILE_MODE = 0o600
#: A key file is a few hundred bytes; anything much larger is not one of ours.
MAX_KEY_FILE_BYTES = 4096
#: scrypt cost: 2**15 * r=8 is 32 MiB and ~0.1 s, the interactive-login setting.
DEFAULT_LOG2_N = 15
SCRYPT_R = 8
SCRYPT_P = 1
#: Bounds on the cost a file may ask for: below, the passphrase is cheap to brute-force;
#: above, a hostile file could make loading take gigabytes of memory.
MIN_LOG2_N = 10
MAX_LOG2_N = 20
SALT_LEN = 16
NONCE_LEN = 12


def generate_keypair() -> Keypair:
    """A fresh key from the OS CSPRNG."""
    return Keypair.from_seed(secrets.token_bytes(SEED_LEN))


# --- saving ------------------------------------------------------------------------------------------


def save_keypair(
    path: Path, key: Keypair, passphrase: str | None = None, *, log2_n: int = DEFAULT_LOG2_N
) -> None:
    """Write `key` to `path` atomically with mode 0600, encrypted when a passphrase is given."""
    doc = _header(key)
    if passphrase is None:
        doc["seed"] = key.seed().hex()
    else:
        if not passphrase:
            raise KeyFileError("an empty passphrase protects nothing; omit it for a plaintext key")
        doc.update(_encrypt(key.seed(), passphrase, doc, log2_n))
    write_private_atomic(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def _header(key: Keypair) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "type": KEY_TYPE, "public": key.public.hex()}


def _encrypt(seed: bytes, passphrase: str, header: dict[str, Any], log2_n: int) -> dict[str, Any]:
    if not MIN_LOG2_N <= log2_n <= MAX_LOG2_N:
        raise KeyFileError(f"scrypt log2_n must be {MIN_LOG2_N}..{MAX_LOG2_N}")
    salt = secrets.token_hex(SALT_LEN)
    kdf = {"name": "scrypt", "log2_n": log2_n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": salt}
    cipher = {"name": "chacha20-poly1305", "nonce": secrets.token_hex(NONCE_LEN)}
    aead = ChaCha20Poly1305(_derive(passphrase, kdf))
    ciphertext = aead.encrypt(bytes.fromhex(cipher["nonce"]), seed, _aad(header, kdf, cipher))
    return {"kdf": kdf, "cipher": cipher, "ciphertext": ciphertext.hex()}


def _aad(header: dict[str, Any], kdf: dict[str, Any], cipher: dict[str, Any]) -> bytes:
    bound = {k: header[k] for k in ("format", "version", "type", "public")} | {"kdf": kdf, "cipher": cipher}
    return json.dumps(bound, sort_keys=True, separators=(",", ":")).encode()


def _derive(passphrase: str, kdf: dict[str, Any]) -> bytes:
    scrypt = Scrypt(salt=bytes.fromhex(kdf["salt"]), length=32, n=2 ** kdf["log2_n"], r=kdf["r"], p=kdf["p"])
    return scrypt.derive(passphrase.encode("utf-8"))


def write_private_atomic(path: Path, data: bytes) -> None:
    """Temp file (created 0600, never wider) + fsync + rename + fsync of the directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)  # in case a umask or ACL widened it
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- loading -----------------------------------------------------------------------------------------


def load_keypair(path: Path, passphrase: str | None = None) -> Keypair:
    """Load a key file, or raise KeyFileError saying exactly what is wrong with it."""
    doc = _read_document(path)
    public = _hex_field(path, doc, "public", 32)
    encrypted = "ciphertext" in doc
    seed = _decrypt(path, doc, passphrase) if encrypted else _hex_field(path, doc, "seed", SEED_LEN)
    key = Keypair.from_seed(seed)
    if key.public != public:
        raise KeyFileError(f"{path}: corrupt key file (the seed does not match the stored public key)")
    return key


def read_public_key(path: Path) -> bytes:
    """The stored public key, without needing the passphrase (for `polnet` to show the id)."""
    doc = _read_document(path)
    return _hex_field(path, doc, "public", 32)


def _read_document(path: Path) -> dict[str, Any]:
    raw = _read_private(path)
    if raw.lstrip().startswith(b"-----BEGIN"):
        raise KeyFileError(f"{path}: wrong key type: a PEM key, not a polnet key file")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyFileError(f"{path}: corrupt key file (not a JSON document)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeyFileError(f"{path}: corrupt key file (not a {FORMAT} document)")
    if type(doc.get("version")) is not int or doc["version"] != VERSION:
        found = doc.get("version")
        raise KeyFileError(f"{path}: unsupported key file version {found!r} (this node reads {VERSION})")
    if doc.get("type") != KEY_TYPE:
        raise KeyFileError(f"{path}: wrong key type {doc.get('type')!r}; polnet node keys are {KEY_TYPE}")
    return doc


def _read_private(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found (create one with `polnet init`)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open key file: {exc.strerror}") from None
    _check_opened(path, fd)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_KEY_FILE_BYTES + 1)


def _check_opened(path: Path, fd: int) -> None:
    """Check the file we opened (fstat), not a name that may have changed since."""
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "not a regular file"
    elif st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        problem = f"key file is readable by others (mode {mode:o}); run chmod 600 {path}"
    elif st.st_size > MAX_KEY_FILE_BYTES:
        problem = f"corrupt key file ({st.st_size} bytes is too large)"
    if problem is not None:
        os.close(fd)
        raise KeyFileError(f"{path}: {problem}")


def _hex_field(path: Path, doc: dict[str, Any], name: str, length: int) -> bytes:
    value = doc.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != length:
        raise KeyFileError(f"{path}: corrupt key file (field {name!r} must be {length} hex bytes)")
    return raw


def _decrypt(path: Path, doc: dict[str, Any], passphrase: str | None) -> bytes:
    if passphrase is None:
        raise KeyFileError(f"{path}: key file is encrypted; a passphrase is required")
    kdf, cipher = doc.get("kdf"), doc.get("cipher")
    if not isinstance(kdf, dict) or not isinstance(cipher, dict):
        raise KeyFileError(f"{path}: corrupt key file (missing kdf or cipher)")
    _check_params(path, kdf, cipher)
    ciphertext = _hex_field(path, doc, "ciphertext", SEED_LEN + 16)
    try:
        aead = ChaCha20Poly1305(_derive(passphrase, kdf))
        return aead.decrypt(bytes.fromhex(cipher["nonce"]), ciphertext, _aad(doc, kdf, cipher))
    except InvalidTag:
        raise KeyFileError(f"{path}: wrong passphrase (or the encrypted key was altered)") from None
    except (ValueError, TypeError, PolnetError) as exc:
        raise KeyFileError(f"{path}: corrupt key file ({exc})") from None


def _check_params(path: Path, kdf: dict[str, Any], cipher: dict[str, Any]) -> None:
    ok = (
        kdf.get("name") == "scrypt"
        and type(kdf.get("log2_n")) is int
        and MIN_LOG2_N <= kdf["log2_n"] <= MAX_LOG2_N
        and kdf.get("r") == SCRYPT_R
        and kdf.get("p") == SCRYPT_P
        and isinstance(kdf.get("salt"), str)
        and len(kdf["salt"]) == 2 * SALT_LEN
        and cipher.get("name") == "chacha20-poly1305"
        and isinstance(cipher.get("nonce"), str)
        and len(cipher["nonce"]) == 2 * NONCE_LEN
    )
    if not ok:
        raise KeyFileError(f"{path}: corrupt or unsupported encryption parameters")
