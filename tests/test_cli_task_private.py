"""`private = true` on the submitter's side: the key is drawn and committed, the dataset is
sealed before it reaches the blob directory, the node refuses a private task whose
dataset sits there in the clear, and `task result` opens the sealed weights."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

import cli.task_cmd as task_cmd
from cli.task_spec import build_task
from node.daemon.blobdir import BlobDir
from node.daemon.tasks import parse_task_request
from node.datadir import DataDir
from protocol.errors import ConfigError, ValidationError
from protocol.market.keyring import PrivateSubmit, key_commitment
from protocol.records import encode_record
from protocol.sealing import seal_blob, sealed_locator

DOC: dict[str, Any] = {"dataset": "synthetic", "hidden": [8], "steps": 64, "checkpoint_interval": 1,
                       "synthetic": {"samples": 64, "features": 4, "classes": 3}}


def _windows(data: bytes, n: int = 64) -> set[bytes]:
    return {data[i:i + n] for i in range(0, max(1, len(data) - n), n // 2)}


class _Compute:
    """What parse_task_request reads of the node's compute: its blob directory."""

    def __init__(self, blobs: BlobDir) -> None:
        self.blobs = blobs


def test_a_private_spec_draws_a_fresh_key_and_commits_to_it() -> None:
    a, b = build_task({**DOC, "private": True}, Path(".")), build_task({**DOC, "private": True}, Path("."))
    assert a.content_key is not None and a.content_key != b.content_key
    assert a.submit.key_commit == key_commitment(a.content_key)
    assert build_task(DOC, Path(".")).submit.key_commit == b""


def test_private_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="private must be true or false"):
        build_task({**DOC, "private": "yes"}, Path("."))


def test_submit_seals_the_dataset_before_it_reaches_the_blob_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = build_task({**DOC, "private": True}, Path("."))
    sent: list[dict[str, Any]] = []

    def post(url: str, doc: dict[str, Any]) -> dict[str, Any]:
        sent.append(doc)
        return {"task_id": "ab" * 32}

    monkeypatch.setattr(task_cmd, "_post_json", post)
    dd = DataDir(tmp_path)
    assert task_cmd.submit_built(dd, "http://node", built) == "ab" * 32
    assert built.content_key is not None
    assert sent[0]["content_key"] == built.content_key.hex()
    blobs = BlobDir(dd.blobs)
    digest = hashlib.sha256(built.dataset_blob).digest()
    assert blobs.read(digest) is None  # not stored in the clear
    assert blobs.read_sealed(sealed_locator(built.content_key, digest)) is not None
    windows = _windows(built.dataset_blob)
    for f in dd.blobs.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not any(w in data for w in windows), f"{f.name} holds the dataset in the clear"
    key_file = tmp_path / task_cmd.TASK_KEYS_DIR / ("ab" * 32)
    assert key_file.read_bytes() == built.content_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def _request(built: Any, key: bytes | None) -> bytes:
    doc = {"submit": encode_record(built.submit).hex()}
    if key is not None:
        doc["content_key"] = key.hex()
    return json.dumps(doc).encode()


def test_the_node_takes_a_private_task_only_with_its_key_and_its_dataset_sealed(tmp_path: Path) -> None:
    built = build_task({**DOC, "private": True}, Path("."))
    key = built.content_key
    assert key is not None
    blobs = BlobDir(tmp_path)
    blobs.put(encode_record(built.spec))
    compute: Any = _Compute(blobs)
    with pytest.raises(ValidationError, match="sealed dataset blob is not"):
        parse_task_request(_request(built, key), compute)
    digest = hashlib.sha256(built.dataset_blob).digest()
    blobs.put_sealed(sealed_locator(key, digest), seal_blob(key, built.dataset_blob))
    req = parse_task_request(_request(built, key), compute)
    assert isinstance(req, PrivateSubmit) and req.content_key == key and req.submit == built.submit
    with pytest.raises(ValidationError, match="needs its content_key"):
        parse_task_request(_request(built, None), compute)
    with pytest.raises(ValidationError, match="not the key"):
        parse_task_request(_request(built, b"\x01" * 32), compute)
    blobs.put(built.dataset_blob)  # the operator left the plaintext where peers can fetch it
    with pytest.raises(ValidationError, match="in the clear"):
        parse_task_request(_request(built, key), compute)


def test_task_result_opens_the_sealed_weights_with_the_submitters_key(tmp_path: Path) -> None:
    dd = DataDir(tmp_path)
    key, weights, tid = b"\x33" * 32, b"weights " * 1000, "cd" * 32
    digest = hashlib.sha256(weights).digest()
    BlobDir(dd.blobs).put_sealed(sealed_locator(key, digest), seal_blob(key, weights))
    with pytest.raises(ConfigError, match="does not hold"):
        task_cmd._weights(dd, tid, digest)  # no key file: looked up in the clear, absent
    (tmp_path / task_cmd.TASK_KEYS_DIR).mkdir()
    (tmp_path / task_cmd.TASK_KEYS_DIR / tid).write_bytes(key)
    assert task_cmd._weights(dd, tid, digest) == weights
    (tmp_path / task_cmd.TASK_KEYS_DIR / tid).write_bytes(b"\x34" * 32)
    with pytest.raises(ConfigError, match="does not hold"):
        task_cmd._weights(dd, tid, digest)  # another key: another locator, nothing found


def test_the_private_example_task_file_builds_a_private_task() -> None:
    from cli.task_spec import read_spec_file

    examples = Path(__file__).resolve().parent.parent / "docs" / "examples"
    built = build_task(read_spec_file(examples / "private.toml"), examples)
    assert built.content_key is not None and built.submit.key_commit == key_commitment(built.content_key)
