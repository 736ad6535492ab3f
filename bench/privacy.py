"""Privacy benchmark: what sealing a private task costs next to training it.

Run: .venv/bin/python bench/privacy.py [--reps R] [--rounds N] [--train-rounds T]

Six real tasks, side by side in one run, one thread (CPU time of the process, which on a
shared box is steadier than wall time; wall time is printed beside it): the three workloads
of bench/workloads.py (its spec builders),

  mlp          the digits MLP (mlp_spec: 64-256-256-10, Adam, batch 128);
  cnn          the digits CNN (cnn_spec: conv3x3 1->16, pool, conv3x3 16->32, pool, linear;
               Adam, batch 64, digits as 1x8x8);
  transformer  the character LM (lm_spec: 2 pre-norm blocks, d_model 64, 4 heads, context
               64, tied byte embeddings; AdamW, batch 16, the built-in corpus);

each as a task of 64 segments (65 checkpoints, the market benchmark's segment count) at two
lengths (INTERVALS): "market", a segment about 0.2 CPU-s of training (k = 100, 100, 10: tasks
of 11 to 13 s), and "dense", bench/workloads.py's k = 10, 2, 2 (a checkpoint every 4 to 40 ms;
tasks of 0.2 to 2.4 s). Sealing costs per blob (two HMACs, an AESGCM key set-up, a few us of
Python) and per byte (AES-GCM twice, SHA-256 on open), so its share of a task is the task's
checkpoint rate (blobs and bytes per training second, printed) times those costs: at the
dense cadence it is 5-15%, whatever the implementation (SHA-256 alone runs at 1.8 GB/s here,
and the dense MLP checkpoints 59 MB per training second), and it falls as 1/k.

Each task is trained by node/compute's trainer after one untimed warm-up run of k steps (first
calls pay for torch's lazy set-up: about 1.5 CPU-s), T times from scratch (median). For each,
every blob the task produces (the spec record, the dataset, and every blob publish_run puts
into an in-memory store: tensors, digest lists, leaves, Merkle nodes) is sealed with seal_blob
under one content key (its digest given, with its sealed_locator), the key is wrapped to 6
recipients (profiler, solver, 3 verifiers, a watcher), each unwraps it, and every blob is
opened with open_blob (digest check included):

  sealed_overhead_vs_training  (seal + wrap + unwrap + open) / training, CPU time, each phase
                               the median of --rounds rounds, the WORST (max) of the three
                               market-length tasks. Goal <= 0.02. Per workload:
                               sealed_overhead_vs_training_<workload>; the dense tasks' worst
                               and per-workload ratios are sealed_overhead_vs_training_dense[_<w>].
                               _wall and _cold beside it are the worst market-length wall-time
                               ratio and first (cold) round alone; training_s, seal_s,
                               wrap_unwrap_s, open_s, blob_bytes and n_blobs are those of the
                               worst market-length workload (sealed_overhead_worst_workload).
  aead_throughput_vs_raw       64 MiB of random bytes sealed with seal_pieces (the sealed blob
                               as its header and one piece per 1 MiB chunk, its digest given)
                               and decrypted piece by piece by open_pieces' decrypt path
                               (protocol.sealing._decrypt_pieces: header checks, every chunk
                               authenticated and decrypted, each plaintext chunk dropped; all of
                               open_pieces except the SHA-256 digest check), against raw
                               `cryptography` AESGCM encrypt + decrypt of the same bytes in the
                               same 1 MiB chunks, keeping the ciphertexts and dropping each
                               decrypted chunk: the same work with the same memory on both sides;
                               median of R interleaved rounds, run first, in a fresh process.
                               Goal >= 0.8. Beside it, in the same run:
    aead_throughput_vs_raw_after_tasks   the same again after the six tasks (recycled heap);
    aead_throughput_vs_raw_whole_blob    the whole-blob API (seal_blob + _decrypt, what the
                                         engine's blob store calls) against the same raw loop:
                                         each side of it puts a fresh 64 MiB output into memory
                                         (16,384 page faults, more CPU than the AES itself),
                                         which the chunked raw loop never does (_after_tasks:
                                         the same on a recycled heap);
    aead_throughput_vs_raw_full_open     seal_pieces + the whole open_pieces (digest checked);
    aead_throughput_vs_raw_plus_sha256   that against raw AES-GCM plus the one SHA-256 pass
                                         the format needs (the digest check);
    aead_throughput_vs_raw_kept          the whole-blob path against a raw loop that keeps its
                                         decrypted plaintext too;
  sealed_path_vs_plain_path    what a blob's path costs a private task against a public one, as
                               a throughput ratio (plain s / sealed s; 1 = free): sealed =
                               seal_blob with the digest known + the whole open_blob; plain = the
                               one sha256 check a public blob gets on arrival. The extra seconds
                               per 64 MiB are printed beside it (sealed_path_extra_s).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.compute import datasets
from node.compute.datasets import AnyDataset
from node.compute.proofblobs import publish_run
from node.compute.trainer import Run
from protocol.pol.spec import TaskSpec
from protocol.records import encode_record
from protocol.sealing import (
    SEAL_CHUNK,
    _decrypt,
    _decrypt_pieces,
    enc_private_key,
    enc_public_key,
    open_blob,
    open_pieces,
    seal_blob,
    seal_pieces,
    sealed_locator,
    unwrap_content_key,
    wrap_content_key,
)

WORKLOADS = ("mlp", "cnn", "transformer")
RECIPIENTS = ("profiler", "solver", "verifier-1", "verifier-2", "verifier-3", "watcher")
CHAIN_ID = "polnet-bench"
THROUGHPUT_BYTES = 64 << 20
OVERHEAD_GOAL, THROUGHPUT_GOAL = 0.02, 0.8


def clocked(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, CPU seconds, wall seconds)."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def minor_faults() -> int:
    """Minor page faults of this process so far (each a fresh 4 KiB page touched)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- real private tasks ---------------------------------------------------------------------------


#: Checkpoint interval k of each workload, per task length. 64 segments (65 checkpoints) either
#: way, so steps = 64 k. "dense": bench/workloads.py's settings, a segment every 4 to 40 ms of
#: training (the shortest tasks the market benchmarks run). "market": k chosen (once, on the
#: bench box) so a segment is about 0.2 CPU-s of one-thread training: mlp 1.8 ms a step -> 100,
#: cnn 1.7 ms -> 100, transformer 19 ms -> 10; a 13-second task, still far shorter than any
#: fine-tune a submitter would pay a market for.
INTERVALS = {"dense": {"mlp": 10, "cnn": 2, "transformer": 2},
             "market": {"mlp": 100, "cnn": 100, "transformer": 10}}
LENGTHS = tuple(INTERVALS)
SEGMENTS = 64


def workload(name: str, length: str) -> tuple[TaskSpec, AnyDataset, str]:
    """(spec, dataset, description) of one of bench/workloads.py's three workloads, with
    64 segments of INTERVALS[length][name] steps."""
    from workloads import cnn_spec, lm_spec, mlp_spec

    k = INTERVALS[length][name]
    if name == "mlp":
        digits = datasets.digits()
        return mlp_spec(digits, SEGMENTS * k, k), digits, "digits MLP 64-256-256-10 (Adam, batch 128)"
    if name == "cnn":
        images = datasets.digit_images()
        title = "digits CNN conv16-pool-conv32-pool-linear (Adam, batch 64)"
        return cnn_spec(images, SEGMENTS * k, k), images, title
    if name == "transformer":
        corpus = datasets.corpus()
        title = "char transformer 2 blocks, d_model 64, context 64 (AdamW, batch 16)"
        return lm_spec(corpus, SEGMENTS * k, k), corpus, title
    raise ValueError(f"unknown workload {name!r}")


def task_blobs(spec: TaskSpec, data: AnyDataset, train_rounds: int
               ) -> tuple[dict[bytes, bytes], float, float]:
    """Train the task for real and collect every blob it produces, keyed by digest: (store,
    training CPU s, training wall s). After an untimed k-step warm-up, the task is trained
    `train_rounds` times from scratch (training is deterministic: the same checkpoints each
    time) and the training time is the median, as each sealing phase is."""
    assert train_rounds >= 1
    Run(replace(spec, steps=spec.checkpoint_interval), data, threads=1).train()  # warm-up
    cpu, wall, roots = [], [], set()
    for _ in range(train_rounds):
        run = Run(spec, data, threads=1)
        _, c, w = clocked(run.train)
        cpu.append(c)
        wall.append(w)
        roots.add(run.root())
    assert len(roots) == 1, "training is not deterministic"
    train_cpu, train_wall = statistics.median(cpu), statistics.median(wall)
    store: dict[bytes, bytes] = {}

    def put(blob: bytes) -> bytes:
        digest = sha(blob)
        store.setdefault(digest, blob)
        return digest

    put(encode_record(spec))
    put(data.blob)
    publish_run(put, run)
    assert len(run.checkpoints()) == spec.num_checkpoints == spec.steps // spec.checkpoint_interval + 1
    return store, train_cpu, train_wall


def seal_round(store: dict[bytes, bytes]) -> dict[str, tuple[float, float]]:
    """One private task's sealing, end to end: (CPU s, wall s) of each phase."""
    content_key = os.urandom(32)  # what a submitter draws
    task_id = sha(b"bench private task")
    privs = [enc_private_key(sha(name.encode()), 0) for name in RECIPIENTS]
    pubs = [enc_public_key(p) for p in privs]

    def seal() -> dict[bytes, tuple[bytes, bytes]]:
        # The store is keyed by digest (a blob's id), so the digest is passed, as callers do.
        return {d: (sealed_locator(content_key, d), seal_blob(content_key, b, digest=d))
                for d, b in store.items()}

    def wrap() -> list[bytes]:
        return [wrap_content_key(content_key, pub, CHAIN_ID, task_id) for pub in pubs]

    sealed, seal_cpu, seal_wall = clocked(seal)
    wraps, wrap_cpu, wrap_wall = clocked(wrap)
    keys, unwrap_cpu, unwrap_wall = clocked(
        lambda: [unwrap_content_key(w, p, CHAIN_ID, task_id) for w, p in zip(wraps, privs)])
    assert keys == [content_key] * len(RECIPIENTS)

    def open_all() -> int:
        # Each plaintext is checked and dropped before the next is opened, as a verifier uses
        # a blob and lets it go: holding a whole task's plaintexts at once would only time
        # the heap growing by them (page faults), which no party of a real task does.
        wrong = 0
        for d, (_, s) in sealed.items():
            wrong += open_blob(keys[0], d, s, len(store[d])) != store[d]
        return wrong

    wrong, open_cpu, open_wall = clocked(open_all)
    assert wrong == 0
    return {"seal": (seal_cpu, seal_wall), "wrap": (wrap_cpu, wrap_wall),
            "unwrap": (unwrap_cpu, unwrap_wall), "open": (open_cpu, open_wall)}


def seal_task(store: dict[bytes, bytes], rounds: int) -> tuple[dict[str, tuple[float, float]], float]:
    """Median of each phase over `rounds` whole rounds (each with a fresh content key, results
    dropped in between), and the CPU seconds of the first (cold) round: it also pays for the
    process growing its heap by the sealed and opened copies (page faults)."""
    runs = [seal_round(store) for _ in range(rounds)]
    cold = sum(c for c, _ in runs[0].values())
    med = {phase: (statistics.median(r[phase][0] for r in runs), statistics.median(r[phase][1] for r in runs))
           for phase in runs[0]}
    return med, cold


# --- AEAD throughput against raw cryptography -------------------------------------------------------


def throughput(reps: int) -> dict[str, float]:
    plain = os.urandom(THROUGHPUT_BYTES)
    digest = sha(plain)
    content_key = os.urandom(32)
    raw = AESGCM(os.urandom(32))
    view = memoryview(plain)
    n = -(-len(plain) // SEAL_CHUNK)
    size = len(plain)

    def raw_encrypt() -> list[bytes]:
        return [raw.encrypt(i.to_bytes(12, "big"), view[i * SEAL_CHUNK : (i + 1) * SEAL_CHUNK], None)
                for i in range(n)]

    def baseline() -> None:
        for i, ct in enumerate(raw_encrypt()):
            raw.decrypt(i.to_bytes(12, "big"), ct, None)

    def baseline_kept() -> list[bytes]:
        return [raw.decrypt(i.to_bytes(12, "big"), ct, None) for i, ct in enumerate(raw_encrypt())]

    def drain_decrypt(pieces: list[bytes]) -> None:
        for _ in _decrypt_pieces(content_key, digest, pieces, size, None):
            pass  # each plaintext chunk dropped as it comes, as the raw loop drops them

    def drain_open(pieces: list[bytes]) -> None:
        for _ in open_pieces(content_key, digest, pieces, size):
            pass

    names = ("seal", "decrypt", "open", "seal_whole", "decrypt_whole", "open_whole", "raw", "raw_kept",
             "sha256")
    times: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[int]] = {name: [] for name in names}  # minor page faults (fresh pages)

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        f = minor_faults()
        out, cpu, _ = clocked(fn)
        faults[name].append(minor_faults() - f)
        times[name].append(cpu)
        return out

    for _ in range(reps):  # interleaved, so load drifts on a shared box hit all of them
        pieces = timed("seal", lambda: list(seal_pieces(content_key, plain, digest)))
        timed("decrypt", partial(drain_decrypt, pieces))
        timed("open", partial(drain_open, pieces))
        del pieces
        sealed = timed("seal_whole", partial(seal_blob, content_key, plain, digest=digest))
        opened = timed("decrypt_whole", partial(_decrypt, content_key, digest, sealed, size, None))
        assert len(opened) == size
        del opened
        opened = timed("open_whole", partial(open_blob, content_key, digest, sealed, size))
        assert opened == plain
        del opened, sealed
        timed("raw", baseline)
        timed("raw_kept", baseline_kept)
        timed("sha256", lambda: sha(plain))
    out = {f"{name}_s": statistics.median(t) for name, t in times.items()}
    out.update({f"{name}_faults": statistics.median(f) for name, f in faults.items()})
    mb = size / 1e6
    out.update(seal_mb_s=mb / (out["seal_s"] + out["decrypt_s"]), raw_mb_s=mb / out["raw_s"],
               sha256_mb_s=mb / out["sha256_s"])
    return out


@dataclass
class TaskResult:
    name: str
    length: str
    title: str
    steps: int
    k: int
    checkpoints: int
    n_blobs: int
    blob_bytes: int
    train_cpu: float
    train_wall: float
    times: dict[str, tuple[float, float]]  # phase: (median CPU s, median wall s)
    cold_cpu: float

    @property
    def crypto_cpu(self) -> float:
        return sum(c for c, _ in self.times.values())

    @property
    def crypto_wall(self) -> float:
        return sum(w for _, w in self.times.values())

    @property
    def ratio(self) -> float:
        return self.crypto_cpu / self.train_cpu


def bench_task(name: str, length: str, rounds: int, train_rounds: int) -> TaskResult:
    spec, data, title = workload(name, length)
    store, train_cpu, train_wall = task_blobs(spec, data, train_rounds)
    times, cold_cpu = seal_task(store, rounds)
    return TaskResult(name, length, title, spec.steps, spec.checkpoint_interval, spec.num_checkpoints,
                      len(store), sum(len(b) for b in store.values()), train_cpu, train_wall, times, cold_cpu)


def print_task(r: TaskResult, rounds: int, train_rounds: int) -> None:
    print(f"{r.name} ({r.length}): {r.title}, {r.steps} steps, k={r.k} ({r.checkpoints} checkpoints); "
          f"{r.n_blobs} blobs, {r.blob_bytes / 1e6:.1f} MB "
          f"({r.blob_bytes / 1e6 / r.train_cpu:.1f} MB and {r.n_blobs / r.train_cpu:.0f} blobs "
          "per training CPU-second)")
    print(f"  {'':10} {'cpu s':>9} {'wall s':>9} {'/ training':>11}")
    print(f"  {'training':10} {r.train_cpu:9.3f} {r.train_wall:9.3f} {1:11.4f}   (median of {train_rounds})")
    for phase, (c, w) in r.times.items():
        print(f"  {phase:10} {c:9.4f} {w:9.4f} {c / r.train_cpu:11.4f}")
    print(f"  {'sealing':10} {r.crypto_cpu:9.4f} {r.crypto_wall:9.4f} {r.ratio:11.4f}"
          f"   goal <= {OVERHEAD_GOAL}  (median of {rounds} rounds)")
    print(f"  {'cold':10} {r.cold_cpu:9.4f} {'':9} {r.cold_cpu / r.train_cpu:11.4f}   (first round alone)",
          flush=True)


def ratio(tp: dict[str, float], num: tuple[str, ...], den: tuple[str, ...]) -> float:
    return sum(tp[f"{k}_s"] for k in num) / sum(tp[f"{k}_s"] for k in den)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7, help="interleaved rounds of the throughput test")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of sealing each task (median)")
    parser.add_argument("--train-rounds", type=int, default=3, help="trainings of each task (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    # The throughput test first, in a fresh process: what the heap holds decides whether
    # 1 MiB buffers are fresh pages (page faults) or recycled ones, and so every chunked
    # loop's speed, ours and the raw one alike. It is run again after the tasks (a heap full of
    # freed memory) for the other extreme.
    tp = throughput(args.reps)
    tasks: dict[tuple[str, str], TaskResult] = {}
    for length in LENGTHS:
        for name in WORKLOADS:  # one at a time: each store is dropped before the next task trains
            tasks[length, name] = bench_task(name, length, args.rounds, args.train_rounds)
            print_task(tasks[length, name], args.rounds, args.train_rounds)
    tp_after = throughput(args.reps)
    worst = {length: max((r for (ln, _), r in tasks.items() if ln == length), key=lambda r: r.ratio)
             for length in LENGTHS}
    for length in LENGTHS:
        print(f"sealed overhead vs training (CPU), {length} tasks: "
              + ", ".join(f"{r.name} {r.ratio:.4f}" for (ln, _), r in tasks.items() if ln == length)
              + f"; worst {worst[length].name} {worst[length].ratio:.4f} (goal <= {OVERHEAD_GOAL})")
    market = [r for (ln, _), r in tasks.items() if ln == "market"]
    worst_wall = max(r.crypto_wall / r.train_wall for r in market)
    worst_cold = max(r.cold_cpu / r.train_cpu for r in market)

    vs_raw = ratio(tp, ("raw",), ("seal", "decrypt"))
    vs_raw_whole = ratio(tp, ("raw",), ("seal_whole", "decrypt_whole"))
    vs_raw_after = ratio(tp_after, ("raw",), ("seal", "decrypt"))
    vs_raw_whole_after = ratio(tp_after, ("raw",), ("seal_whole", "decrypt_whole"))
    vs_raw_full = ratio(tp, ("raw",), ("seal", "open"))
    vs_bound = ratio(tp, ("raw", "sha256"), ("seal", "open"))
    vs_kept = ratio(tp, ("raw_kept",), ("seal_whole", "decrypt_whole"))
    vs_plain = ratio(tp, ("sha256",), ("seal_whole", "open_whole"))
    sealed_path = tp["seal_whole_s"] + tp["open_whole_s"]
    print(f"64 MiB, 1 MiB chunks, median of {args.reps} (cpu s): "
          f"seal_pieces {tp['seal_s']:.4f}, decrypt pieces {tp['decrypt_s']:.4f}, "
          f"open_pieces {tp['open_s']:.4f}; "
          f"whole blob: seal_blob {tp['seal_whole_s']:.4f}, decrypt path {tp['decrypt_whole_s']:.4f}, "
          f"open_blob {tp['open_whole_s']:.4f}; raw AESGCM enc+dec {tp['raw_s']:.4f} "
          f"(keeping its plaintext {tp['raw_kept_s']:.4f}); sha256 {tp['sha256_s']:.4f} "
          f"({tp['sha256_mb_s']:.0f} MB/s)")
    print("  page faults per round (fresh process / after the tasks): "
          + ", ".join(f"{name} {tp[name + '_faults']:.0f} / {tp_after[name + '_faults']:.0f}"
                      for name in ("seal", "decrypt", "seal_whole", "decrypt_whole", "raw", "raw_kept")))
    print(f"seal+decrypt as pieces vs raw {vs_raw:.3f} (goal >= {THROUGHPUT_GOAL}); after the tasks "
          f"{vs_raw_after:.3f}; seal+open_pieces (digest checked) vs raw {vs_raw_full:.3f}, "
          f"vs raw + 1 sha256 pass {vs_bound:.3f}")
    print(f"whole-blob API (one fresh 64 MiB output each way) vs raw {vs_raw_whole:.3f}, after the tasks "
          f"{vs_raw_whole_after:.3f}; vs raw keeping its plaintext {vs_kept:.3f}")
    print(f"sealed blob path (seal_blob + open_blob) {sealed_path:.4f} s vs plain path (1 sha256) "
          f"{tp['sha256_s']:.4f} s: {vs_plain:.3f} ({sealed_path / tp['sha256_s']:.1f}x the cost, "
          f"+{sealed_path - tp['sha256_s']:.4f} s per 64 MiB)")
    top = worst["market"]
    print(json.dumps({
        "sealed_overhead_vs_training": round(top.ratio, 4),
        **{f"sealed_overhead_vs_training_{r.name}": round(r.ratio, 4) for r in market},
        "sealed_overhead_worst_workload": top.name,
        "sealed_overhead_vs_training_dense": round(worst["dense"].ratio, 4),
        **{f"sealed_overhead_vs_training_dense_{n}": round(r.ratio, 4)
           for (ln, n), r in tasks.items() if ln == "dense"},
        "aead_throughput_vs_raw": round(vs_raw, 3),
        "aead_throughput_vs_raw_after_tasks": round(vs_raw_after, 3),
        "aead_throughput_vs_raw_whole_blob": round(vs_raw_whole, 3),
        "aead_throughput_vs_raw_whole_blob_after_tasks": round(vs_raw_whole_after, 3),
        "aead_throughput_vs_raw_plus_sha256": round(vs_bound, 3),
        "aead_throughput_vs_raw_full_open": round(vs_raw_full, 3),
        "aead_throughput_vs_raw_kept": round(vs_kept, 3),
        "sealed_path_vs_plain_path": round(vs_plain, 3),
        "sealed_path_extra_s": round(sealed_path - tp["sha256_s"], 4),
        "sealed_overhead_vs_training_wall": round(worst_wall, 4),
        "sealed_overhead_vs_training_cold": round(worst_cold, 4),
        "training_s": round(top.train_cpu, 3),
        "seal_s": round(top.times["seal"][0], 4),
        "wrap_unwrap_s": round(top.times["wrap"][0] + top.times["unwrap"][0], 5),
        "open_s": round(top.times["open"][0], 4),
        "blob_bytes": top.blob_bytes,
        "n_blobs": top.n_blobs,
        "seal_mb_s": round(tp["seal_mb_s"], 1),
        "raw_mb_s": round(tp["raw_mb_s"], 1),
        "sha256_mb_s": round(tp["sha256_mb_s"], 1),
    }))


if __name__ == "__main__":
    main()
