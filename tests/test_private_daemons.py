"""Private tasks on real daemon processes: sealed end to end, settled, and still policed.

Separate `polnet node run` processes on loopback (py-libp2p, sqlite, torch), laid out as
`polnet swarm up` lays them out (tests/market_daemons.py). What netsim shows about
private tasks (tests/test_market_private.py) must hold here too:

- an honest private task settles valid, and `polnet task result` on the submitter's
  data dir writes the weights opened with the task's key (a safetensors checkpoint whose
  hash is the committed result's); a cheat on a private task is caught by the dispute
  game (the validators re-execute one op of data they could only read through a wrap)
  and only the cheater loses stake;
- confidentiality: no file on any node's disk, elected or not, holds a byte window of
  the plaintext dataset (or of the weights); the ledger's wraps went only to parties the
  market elected, and some worker was never given the key; a stock py-libp2p host that
  asks every node for every hash it can learn (the spec, its dataset hash, the proof
  root, every hash a tx of the task names, and whatever those blobs point to) gets
  not-found or ciphertext, never the dataset;
- a submitter whose wraps to its verifiers and watcher open to a wrong key
  (`bad_wrapper`): they report it (`market.key_wrap_fault`, a KeyWrapFault on the
  ledger), the solver wraps again for each of them, and the task still settles valid
  with nobody honest slashed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from cli.swarm_market import honest, swarm_roles, task_docs
from node.daemon.blobdir import BlobDir
from node.datadir import DataDir
from protocol.consensus.config import PERSIST_BLOCK
from protocol.consensus.messages import CommittedBlock
from protocol.envelope import open_envelope
from protocol.errors import PolnetError
from protocol.market.txs import (
    KeyWrap,
    KeyWrapFault,
    ProfileReport,
    ProveCommit,
    VerdictCommit,
    VerdictReveal,
)
from protocol.records import decode_record, encode_record
from protocol.sealing import open_blob, sealed_locator
from tests.daemon_harness import REPO
from tests.market_daemons import CHAIN_ID, MarketNet

#: Generous: the box may be loaded; a task takes 1-3 minutes here.
TASK_TIMEOUT_S = 540.0
#: The plaintext is matched in blocks of this many bytes at every offset of every file;
#: any 64-byte window of it holds a whole aligned block, so no block found means no window.
BLOCK = 32
WINDOW = 64


def _private_docs(count: int, cheaters: int) -> list[dict[str, Any]]:
    return [{**doc, "private": True} for doc in task_docs(count, cheaters)]


def _nodes(net: MarketNet, keys: set[str]) -> list[int]:
    """The node indexes of `keys` (pubkey hex), for messages."""
    return sorted(i for i in map(net.index_of, keys) if i is not None)


def _honest_penalties(net: MarketNet, task: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in task["penalties"]:
        i = net.index_of(p["who"])
        if i is not None and honest(net.roles[i]):
            out.append(p)
    return out


# --- plaintext windows on disk ---------------------------------------------------------------------


def _blocks(plain: bytes) -> dict[bytes, int]:
    """The plaintext's aligned blocks worth looking for, by their bytes -> offset: blocks
    of mostly one byte (runs of zeros, int64 labels) prove nothing when found, and any
    64-byte window that holds an informative aligned block is covered."""
    out: dict[bytes, int] = {}
    for off in range(0, len(plain) - BLOCK + 1, BLOCK):
        b = plain[off:off + BLOCK]
        if max(b.count(c) for c in set(b)) <= BLOCK // 2:
            out.setdefault(b, off)
    return out


def _found_blocks(data: bytes, blocks: dict[bytes, int]) -> list[int]:
    """Offsets in `data` at which one of `blocks` starts (any alignment)."""
    if len(data) < BLOCK or not blocks:
        return []
    heads = np.array(sorted({int.from_bytes(b[:8], "little") for b in blocks}), dtype=np.uint64)
    hits = []
    for a in range(8):
        n = (len(data) - a) // 8
        if n <= 0:
            continue
        words = np.frombuffer(data, dtype="<u8", count=n, offset=a)
        for idx in np.nonzero(np.isin(words, heads))[0]:
            pos = a + 8 * int(idx)
            if data[pos:pos + BLOCK] in blocks:
                hits.append(pos)
    return hits


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


def _plaintext_on_disk(dd: DataDir, plain: bytes) -> list[str]:
    """Every file under the node's data dir (its blob dir and aliases, sqlite, logs, keys)
    that holds a block of `plain`, or is named by its hash."""
    blocks = _blocks(plain)
    assert len(blocks) * BLOCK >= len(plain) // 2, "the plaintext is too repetitive to look for"
    name = hashlib.sha256(plain).hexdigest()
    bad = []
    for path in _files(dd.root):
        data = path.read_bytes()
        if path.name == name or _found_blocks(data, blocks):
            bad.append(str(path.relative_to(dd.root)))
    return bad


def test_the_window_scanner_finds_a_window_at_any_offset_and_ignores_ciphertext() -> None:
    from cli.task_spec import build_task

    plain = build_task(task_docs(1, 0)[0], Path(".")).dataset_blob
    blocks = _blocks(plain)
    x = len(plain) - 512 * 16 * 4  # the float features, after the header and the int64 labels
    for off in (0, 1, 7, x, x + 333, len(plain) - WINDOW):
        window = plain[off:off + WINDOW]
        assert _found_blocks(os.urandom(off % 97) + window + os.urandom(50), blocks), off
    # Labels are mostly zero bytes: a window of them alone proves nothing and is not sought.
    assert not _found_blocks(plain[x - 2 * WINDOW:x - WINDOW], blocks)
    assert not _found_blocks(os.urandom(len(plain) * 2), blocks)


def test_bad_wrapper_is_a_role_a_daemon_config_accepts() -> None:
    from node.config import ADVERSARIES, RolesConfig
    from protocol.market.adversaries import ADVERSARY_ROLES

    assert set(ADVERSARY_ROLES) <= set(ADVERSARIES)
    RolesConfig(validator=True, adversary="bad_wrapper").validate()


# --- the ledger, read back from a node's chain database ---------------------------------------------


def _ledger(dd: DataDir) -> list[tuple[int, bytes, Any]]:
    """(height, sender, body) of every tx node `dd` committed, read from its sqlite
    (read-only: the node may still be running)."""
    db = sqlite3.connect(f"file:{dd.chain_db}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT value FROM records WHERE kind = ? ORDER BY key",
                          (PERSIST_BLOCK,)).fetchall()
    finally:
        db.close()
    out = []
    for (raw,) in rows:
        block = decode_record(CommittedBlock, bytes(raw)).block
        for tx in block.txs:
            env = open_envelope(tx, CHAIN_ID)
            out.append((block.height, env.sender, env.body))
    return out


def _of_task(txs: list[tuple[int, bytes, Any]], tid: bytes) -> list[tuple[int, bytes, Any]]:
    return [t for t in txs if getattr(t[2], "task_id", None) == tid]


def _hashes_named(value: Any) -> set[bytes]:
    """Every 32-byte value in a tx, at any depth (what an observer of the ledger learns)."""
    if isinstance(value, bytes):
        return {value} if len(value) == 32 else set()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return set().union(*(_hashes_named(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, (list, tuple)):
        return set().union(*(_hashes_named(v) for v in value)) if value else set()
    return set()


def _elected(net: MarketNet, doc: dict[str, Any], task_txs: list[tuple[int, bytes, Any]]) -> set[str]:
    """The parties the market elected for the task, as its txs and doc show them: the
    solver, the profilers and verifiers (who reported and committed), its watchers."""
    out = {doc["solver"], *doc["watchers"]}
    for _, sender, body in task_txs:
        if isinstance(body, (ProveCommit, ProfileReport, VerdictCommit, VerdictReveal)):
            out.add(sender.hex())
    return out - {None}


def _check_wraps(net: MarketNet, doc: dict[str, Any], task_txs: list[tuple[int, bytes, Any]],
                 game: bool) -> tuple[set[str], set[str]]:
    """The wraps went only to elected parties (or validators, when a game was judged),
    the doc's key holders are the ledger's wrap recipients; returns (holders, elected)."""
    holders = set(doc["key_holders"])
    recipients = {body.recipient.hex() for _, _, body in task_txs if isinstance(body, KeyWrap)}
    assert holders == recipients, (holders, recipients)
    elected = _elected(net, doc, task_txs)
    allowed = elected | (set(net.pubkeys) if game else set())  # every swarm node validates
    assert holders <= allowed, {net.index_of(h) for h in holders - allowed}
    assert doc["solver"] in holders and set(doc["watchers"]) <= holders
    return holders, elected


# --- the outsider: a stock py-libp2p host fetching whatever it can name ----------------------------


async def _raw_fetch(host: Any, peer: Any, digest: bytes, max_size: int = 64 << 20) -> tuple[str, bytes]:
    """Ask `peer` for `digest` on the blob protocol and take whatever comes back, unchecked."""
    from libp2p.utils.varint import read_varint_prefixed_bytes_limited

    from node.transport.blobs import BLOB_PROTOCOL, Status, decode_header, encode_request

    try:
        with trio.fail_after(10):
            stream = await host.new_stream(peer, [BLOB_PROTOCOL])
            await stream.write(encode_request(digest, max_size))
            status, size = decode_header(await read_varint_prefixed_bytes_limited(stream, 128))
            body = bytearray()
            while status is Status.OK and len(body) < size:
                chunk = await stream.read(size - len(body))
                if not chunk:
                    break
                body.extend(chunk)
    except Exception as exc:  # a reset, a refusal: the fetch got nothing
        return f"failed:{type(exc).__name__}", b""
    return status.name, bytes(body)


def _pointers(body: bytes) -> set[bytes]:
    """Hashes a fetched blob points to, read the way proofblobs and the spec lay them out:
    a Merkle node's children, a leaf's weight and optimizer lists, a digest list, a spec's
    dataset (and base)."""
    from node.compute.proofblobs import NODE_BLOB_LEN
    from protocol.encoding import unpack
    from protocol.pol.merkle import CheckpointLeaf
    from protocol.pol.spec import TaskSpec

    out: set[bytes] = set()
    if len(body) == NODE_BLOB_LEN and body[0] == 1:
        out |= {body[1:33], body[33:65]}
    for kind, raw in ((CheckpointLeaf, body[1:]), (TaskSpec, body)):
        with contextlib.suppress(PolnetError, ValueError, TypeError, IndexError):
            out |= _hashes_named(decode_record(kind, raw))
    try:
        value = unpack(body)
        if isinstance(value, list):
            out |= {v for v in value if isinstance(v, bytes) and len(v) == 32}
    except (PolnetError, ValueError, TypeError):
        pass
    return out


def _outsider_fetches(targets: list[str], seeds: set[bytes]) -> dict[bytes, list[tuple[str, bytes]]]:
    """Every node asked for every seed hash and everything reachable from what came back."""
    from node.adversary.host import open_attacker
    from protocol.identity import Keypair

    answers: dict[bytes, list[tuple[str, bytes]]] = {}

    async def main() -> None:
        async with open_attacker(Keypair.from_seed(os.urandom(32)), CHAIN_ID, targets) as attacker:
            await trio.sleep(1.0)
            frontier = sorted(seeds)
            while frontier and len(answers) < 2_000:
                digest = frontier.pop()
                if digest in answers:
                    continue
                answers[digest] = []
                for peer in attacker.victims:
                    status, body = await _raw_fetch(attacker.host, peer, digest)
                    answers[digest].append((status, body))
                    frontier += sorted(_pointers(body) - set(answers)) if body else []

    trio.run(main)
    return answers


# --- the tests --------------------------------------------------------------------------------------


def _task_result(net: MarketNet, tid: str, out: Path) -> dict[str, Any]:
    """`polnet task result` against the submitter's (node 0's) data dir, as an operator runs it."""
    cmd = [sys.executable, "-m", "cli.main", "task", "result", tid, "--out", str(out),
           "--data-dir", str(net.dirs[0].root), "--json"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_an_honest_private_task_settles_and_leaves_no_plaintext_on_any_disk_or_wire(tmp_path: Path) -> None:
    t0 = time.monotonic()
    net = MarketNet(tmp_path / "net", swarm_roles(6, cheaters=0)).start()
    try:
        ((tid, built),) = net.submit_docs(_private_docs(1, cheaters=0))
        assert built.content_key is not None
        task = net.wait_status(tid, ("SETTLED", "REFUNDED"), TASK_TIMEOUT_S)
        settled_s = time.monotonic() - t0
        doc = net.task(tid)
        assert doc["status"] == "SETTLED" and doc["proof_valid"] is True, doc
        assert doc["private"] is True and doc["penalties"] == [], doc
        assert doc["key_faults"] == 0, doc

        # The submitter opens its weights: `task result` decrypts the sealed final checkpoint.
        out = tmp_path / "weights.safetensors"
        result = _task_result(net, tid, out)
        weights = out.read_bytes()
        assert hashlib.sha256(weights).hexdigest() == result["weights_blob"]
        from safetensors.numpy import load

        from protocol.pol.spec import param_shapes

        tensors = load(weights)
        shapes = [tuple(tensors[k].shape) for k in sorted(tensors) if k.startswith("w.")]
        assert shapes == [tuple(s) for s in param_shapes(built.spec)], (shapes, param_shapes(built.spec))
        assert 0.0 <= result["accuracy"] <= 1.0

        # An outsider on the wire: a stock host asks every node for every hash it can name.
        txs = _of_task(_ledger(net.dirs[0]), bytes.fromhex(tid))
        spec_hash = hashlib.sha256(encode_record(built.spec)).digest()
        seeds = {spec_hash, built.spec.dataset_hash, bytes.fromhex(doc["proof_root"])}
        for _, _, body in txs:
            seeds |= _hashes_named(body)
        targets = [a for addrs in net.p2p for a in addrs[:1]]
        answers = _outsider_fetches(targets, seeds - {bytes.fromhex(tid)})
    finally:
        net.stop()
    total_s = time.monotonic() - t0

    plain = built.dataset_blob
    blocks = _blocks(plain)
    # The public spec is served (the outsider's fetches work), and it names the dataset.
    assert any(s == "OK" and hashlib.sha256(b).digest() == spec_hash for s, b in answers[spec_hash]), \
        answers[spec_hash]
    # The dataset and the proof: not found on any node, by their plaintext hashes.
    for digest in (built.spec.dataset_hash, bytes.fromhex(doc["proof_root"])):
        assert {s for s, _ in answers[digest]} == {"NOT_FOUND"}, (digest.hex()[:16], answers[digest])
    # Nothing it got is, or holds a window of, the dataset.
    for digest, got in answers.items():
        for status, body in got:
            assert hashlib.sha256(body).digest() != built.spec.dataset_hash
            assert not _found_blocks(body, blocks), (digest.hex()[:16], status)

    # Every disk: no window of the dataset, nor of the weights' tensor bytes.
    header = 8 + int.from_bytes(weights[:8], "little")
    for i, dd in enumerate(net.dirs):
        assert _plaintext_on_disk(dd, plain) == [], f"node {i} holds the dataset in the clear"
        assert _plaintext_on_disk(dd, weights[header:]) == [], f"node {i} holds the weights in the clear"
    holders, elected = _check_wraps(net, doc, txs, game=False)
    # The solver and the verifiers worked on it: they hold the dataset, sealed (so the
    # scan above read the very files a leak would be in), and it opens with the key.
    workers_on_it = {doc["solver"]} | {s.hex() for _, s, b in txs if isinstance(b, VerdictReveal)}
    locator = sealed_locator(built.content_key, built.spec.dataset_hash)
    for i in _nodes(net, workers_on_it):
        sealed = BlobDir(net.dirs[i].blobs).read_sealed(locator)
        assert sealed is not None, f"node {i} worked on the task without its dataset"
        assert open_blob(built.content_key, built.spec.dataset_hash, sealed, len(plain)) == plain
    workers = {net.pubkeys[i] for i, r in enumerate(net.roles) if r.worker}
    outsiders = workers - holders - elected
    assert outsiders, f"every worker was given the key: {_nodes(net, holders)}"
    served = {d.hex()[:12]: sum(s == "OK" for s, _ in g) for d, g in answers.items()
              if any(s == "OK" for s, _ in g)}
    print(f"\nhonest private task: settled in {settled_s:.0f} s, test {total_s:.0f} s; "
          f"key holders {_nodes(net, holders)}, never keyed "
          f"{_nodes(net, outsiders)}; outsider asked {len(answers)} hashes; served (by nodes): {served}; "
          f"task {task['status']}")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_a_cheat_on_a_private_task_is_pinned_and_slashed_by_validators_given_the_key(tmp_path: Path) -> None:
    t0 = time.monotonic()
    roles = swarm_roles(6, cheaters=1, cheats=("bisect_inconsistent",))
    cheater = next(i for i, r in enumerate(roles) if r.cheat)
    net = MarketNet(tmp_path / "net", roles).start()
    try:
        ((tid, built),) = net.submit_docs(_private_docs(1, cheaters=1))  # the bait: only the cheater fits
        net.wait_status(tid, ("SETTLED", "REFUNDED"), TASK_TIMEOUT_S)
        doc = net.task(tid)
    finally:
        net.stop()
    total_s = time.monotonic() - t0
    assert doc["private"] is True
    assert net.index_of(doc["solver"]) == cheater, doc
    assert doc["status"] == "SETTLED" and doc["proof_valid"] is False, doc
    assert any(net.index_of(p["who"]) == cheater and p["why"] == "solver_cheat" for p in doc["penalties"])
    assert _honest_penalties(net, doc) == [], doc["penalties"]
    votes = [e for i in range(len(roles)) for e in net.log_events(i, "market.arbitrated")]
    assert votes and all(v["defender_right"].lower() == "false" for v in votes), votes
    txs = _of_task(_ledger(net.dirs[0]), bytes.fromhex(tid))
    holders, elected = _check_wraps(net, doc, txs, game=True)
    # The validators that re-executed the op read the private data: they were wrapped to.
    arbiters = {i for i in range(len(roles)) if net.log_events(i, "market.arbitrated")}
    assert arbiters <= {net.index_of(h) for h in holders} | {net.index_of(e) for e in elected}, arbiters
    for i, dd in enumerate(net.dirs):
        assert _plaintext_on_disk(dd, built.dataset_blob) == [], f"node {i} holds the dataset in the clear"
    print(f"\nprivate cheat: {doc['outcome']} in {total_s:.0f} s; arbiters {sorted(arbiters)}, "
          f"key holders {_nodes(net, holders)}")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_wrong_wraps_from_the_submitter_are_reported_rewrapped_by_the_solver_and_the_task_settles(
        tmp_path: Path) -> None:
    t0 = time.monotonic()
    roles = swarm_roles(6, cheaters=0)
    roles[0] = dataclasses.replace(roles[0], adversary="bad_wrapper")
    net = MarketNet(tmp_path / "net", roles).start()
    faults_seen = 0
    try:
        ((tid, _),) = net.submit_docs(_private_docs(1, cheaters=0))
        # key_faults counts the reports not yet answered by a fresh wrap: poll it closely.
        deadline = time.monotonic() + TASK_TIMEOUT_S
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                doc = net.task(tid)
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            faults_seen = max(faults_seen, doc.get("key_faults", 0))
            if doc["status"] in ("SETTLED", "REFUNDED"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"timed out; task {doc}")
    finally:
        net.stop()
    total_s = time.monotonic() - t0
    assert doc["status"] == "SETTLED" and doc["proof_valid"] is True, doc
    assert _honest_penalties(net, doc) == [], doc["penalties"]
    solver = bytes.fromhex(doc["solver"])
    txs = _of_task(_ledger(net.dirs[0]), bytes.fromhex(tid))
    faults = [(h, sender) for h, sender, body in txs if isinstance(body, KeyWrapFault)]
    assert faults, "no party reported the wrong wraps"
    # Each reporter was wrapped to again by the solver, after its report.
    for h, sender in faults:
        assert any(isinstance(b, KeyWrap) and s == solver and b.recipient == sender and hh >= h
                   for hh, s, b in txs), f"the solver never re-wrapped for node {net.index_of(sender.hex())}"
        i = net.index_of(sender.hex())
        assert i is not None
        logged = net.log_events(i, "market.key_wrap_fault")
        assert logged and tid.startswith(logged[0]["task"]), logged
        assert "did not commit to" in logged[0]["why"], logged
    # The verifiers committed and revealed: they did their duty with the solver's wrap.
    reporters = {s for _, s in faults}
    verifiers = {s for _, s, b in txs if isinstance(b, VerdictReveal)}
    assert verifiers and verifiers <= reporters, "a verifier opened the submitter's wrong wrap"
    assert faults_seen >= 1, "the task doc never counted a key fault"
    by = _nodes(net, {s.hex() for s in reporters})
    print(f"\nbad wrapper: {len(faults)} faults reported by nodes {by}, peak key_faults {faults_seen}, "
          f"settled valid in {total_s:.0f} s")
