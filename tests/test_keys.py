"""Key files: private by construction, atomic, optionally encrypted, and every way a key
file can be wrong gives a KeyFileError that names the problem."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from node import keys
from protocol.errors import KeyFileError
from protocol.identity import Keypair

FAST = keys.MIN_LOG2_N  # cheap scrypt for tests; the default cost has its own test
KEY = Keypair.derive("node-under-test")


def _doc(path: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def _rewrite(path: Path, doc: dict[str, object]) -> None:
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


def test_a_plain_key_file_is_0600_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.key"
    keys.save_keypair(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load_keypair(path).seed() == KEY.seed()
    assert keys.read_public_key(path) == KEY.public


def test_the_file_is_created_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        keys.save_keypair(tmp_path / "node.key", KEY)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600


def test_an_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    keys.save_keypair(path, KEY, passphrase="correct horse", log2_n=FAST)
    text = path.read_text()
    assert KEY.seed().hex() not in text
    assert keys.load_keypair(path, passphrase="correct horse").seed() == KEY.seed()
    assert keys.read_public_key(path) == KEY.public  # the id is visible without the passphrase
    with pytest.raises(KeyFileError, match="passphrase is required"):
        keys.load_keypair(path)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        keys.load_keypair(path, passphrase="battery staple")


def test_the_default_kdf_cost_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    keys.save_keypair(path, KEY, passphrase="pw")
    assert _doc(path)["kdf"]["log2_n"] == keys.DEFAULT_LOG2_N  # type: ignore[index]
    assert keys.load_keypair(path, passphrase="pw").public == KEY.public


def test_generated_keys_are_distinct_and_saveable(tmp_path: Path) -> None:
    a, b = keys.generate_keypair(), keys.generate_keypair()
    assert a.public != b.public
    keys.save_keypair(tmp_path / "a.key", a)
    assert keys.load_keypair(tmp_path / "a.key").public == a.public


def test_saving_over_an_existing_file_replaces_it_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    keys.save_keypair(path, KEY)
    other = Keypair.derive("other")
    keys.save_keypair(path, other)
    assert keys.load_keypair(path).public == other.public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.key"
    keys.save_keypair(path, KEY)

    def crash(*args: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(keys.os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        keys.save_keypair(path, Keypair.derive("other"))
    assert keys.load_keypair(path).public == KEY.public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]


def test_an_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="empty passphrase"):
        keys.save_keypair(tmp_path / "node.key", KEY, passphrase="")


# --- every way a key file can be wrong ---------------------------------------------------------------


def test_a_missing_key_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        keys.load_keypair(tmp_path / "nope.key")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    keys.save_keypair(path, KEY)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="readable by others"):
        keys.load_keypair(path)


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    keys.save_keypair(tmp_path / "real.key", KEY)
    (tmp_path / "link.key").symlink_to(tmp_path / "real.key")
    with pytest.raises(KeyFileError, match="cannot open"):
        keys.load_keypair(tmp_path / "link.key")


def test_a_directory_is_not_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "dir.key").mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        keys.load_keypair(tmp_path / "dir.key")


CORRUPT_CONTENTS = [
    pytest.param(b"", "not a JSON", id="empty"),
    pytest.param(b"\xff\xfe garbage", "not a JSON", id="binary"),
    pytest.param(b"[1, 2]", "not a polnet-key", id="json-array"),
    pytest.param(b'{"format": "other"}', "not a polnet-key", id="foreign-json"),
    pytest.param(b"{" * 5000, "too large", id="oversized"),
    pytest.param(b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", "wrong key type", id="openssh-pem"),
]


@pytest.mark.parametrize(("content", "message"), CORRUPT_CONTENTS)
def test_corrupt_contents_are_reported(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=message):
        keys.load_keypair(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("type", "secp256k1", "wrong key type"),
        ("version", 2, "unsupported key file version"),
        ("version", True, "unsupported key file version"),
        ("seed", "zz", "'seed' must be 32 hex bytes"),
        ("seed", "00" * 31, "'seed' must be 32 hex bytes"),
        ("public", "00" * 32, "does not match the stored public key"),
        ("public", None, "'public' must be 32 hex bytes"),
    ],
)
def test_a_damaged_plain_key_file_is_reported(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    path = tmp_path / "node.key"
    keys.save_keypair(path, KEY)
    doc = _doc(path)
    doc[field] = value
    _rewrite(path, doc)
    with pytest.raises(KeyFileError, match=message):
        keys.load_keypair(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["kdf"].update(log2_n=30), "unsupported encryption parameters"),  # memory bomb
        (lambda d: d["kdf"].update(log2_n=4), "unsupported encryption parameters"),  # too cheap
        (lambda d: d["cipher"].update(name="none"), "unsupported encryption parameters"),
        (lambda d: d.pop("kdf"), "missing kdf"),
        (lambda d: d.update(ciphertext=d["ciphertext"][:-2]), "'ciphertext' must be 48 hex bytes"),
        (lambda d: d.update(ciphertext="00" + d["ciphertext"][2:]), "wrong passphrase"),
        (lambda d: d["kdf"].update(log2_n=keys.MIN_LOG2_N + 1), "wrong passphrase"),  # header is AAD
        (lambda d: d.update(public=Keypair.derive("x").public.hex()), "wrong passphrase"),
    ],
    ids=[
        "kdf-cost-huge",
        "kdf-cost-tiny",
        "cipher-unknown",
        "no-kdf",
        "ciphertext-short",
        "ciphertext-flipped",
        "kdf-params-edited",
        "public-key-swapped",
    ],
)
def test_a_damaged_encrypted_key_file_is_reported(tmp_path: Path, edit: object, message: str) -> None:
    path = tmp_path / "node.key"
    keys.save_keypair(path, KEY, passphrase="pw", log2_n=FAST)
    doc = _doc(path)
    edit(doc)  # type: ignore[operator]
    _rewrite(path, doc)
    with pytest.raises(KeyFileError, match=message):
        keys.load_keypair(path, passphrase="pw")
