"""One crew member's training: its pipeline stage under a GPipe schedule.

A step is `micro_batches` micro-batches: every forward first (stage s receives each
micro-batch's activations from s-1, runs its blocks, sends to s+1; the last stage
computes the loss), then every backward in reverse order (gradients of the boundary
activations travel back), then one optimizer step on every stage. GPipe, not 1F1B: the
two give the same gradients, and GPipe's fixed send/recv order keeps the transcript a
verifier replays simple; 1F1B would cut activation memory, which these models do not need.

With `data_parallel` replicas, member (stage, replica) talks to the same replica of the
neighbouring stages, each replica trains on its own fixed shard of the samples, and after the
backward pass the replicas of a stage average their gradients: each sends its flat gradient
to the others over the same signed channels and all add them up in replica order
(`StageWorker._all_reduce` says why not gloo's all_reduce); its input and output are hashed too.

What crosses each boundary goes through node/compute/crew/aqsgd.py: fp32, AQ-SGD deltas
against the per-sample cache (first pass in full), or direct quantization (the baseline
AQ-SGD is measured against). Every member hashes every boundary message it sends and
receives (`Transcript`), in order: the crew's proofs commit to those hashes, and a
neighbour's record of what it received must equal the sender's record of what it sent.

Data: fixed windows of the training bytes, sample id = window index. Each epoch visits
every window once in an order drawn from the seed, cut into micro-batches that never mix
a window's first pass with a later one (epoch 0 is all first passes), so AQ-SGD's caches
see every sample once per epoch.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load, load_file, save

from node.compute.crew import aqsgd
from node.compute.crew.channels import Channel
from node.compute.crew.model import ModelShape, build_stage, canonical_state


@dataclass(frozen=True)
class CrewConfig:
    """Everything that decides a crew's run (all members must agree on it)."""

    stages: int = 4
    shape: ModelShape = field(default_factory=ModelShape)
    micro_batch: int = 8
    micro_batches: int = 4
    epochs: int = 20
    n_train: int = 256  # training windows (samples)
    n_val: int = 64
    bits: int | None = None  # activation bits; None: fp32
    direct: bool = False  # quantize activations directly instead of AQ-SGD deltas
    grad_bits: int | None = aqsgd.GRAD_BITS
    lr: float = 3e-3
    seed: int = 1
    base: str | None = None  # a safetensors file of the whole model to fine-tune from
    data_parallel: int = 1  # replicas of each stage, gradients all-reduced among them
    segment_steps: int = 4  # steps between two committed checkpoints of every member (k)

    @property
    def batch(self) -> int:
        """Samples per step, over all replicas."""
        return self.micro_batch * self.micro_batches * self.data_parallel

    @property
    def world(self) -> int:
        return self.stages * self.data_parallel

    def rank(self, stage: int, replica: int) -> int:
        """Member numbering: the replicas of stage 0 first, then stage 1's, and so on."""
        return stage * self.data_parallel + replica

    def position(self, rank: int) -> tuple[int, int]:
        """(stage, replica) of a member."""
        return divmod(rank, self.data_parallel)

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def boundaries(self, steps: int | None = None) -> list[int]:
        """The steps at which every member checkpoints: 0, k, 2k, ... and the last step of a
        run of `steps` steps (default: the whole schedule). Segment j runs from boundary j
        to boundary j+1."""
        steps = self.total_steps if steps is None else min(steps, self.total_steps)
        return [*range(0, steps, self.segment_steps), steps]

    def __post_init__(self) -> None:
        if self.stages < 1 or self.data_parallel < 1:
            raise ValueError("a crew needs at least one stage and one replica")
        if self.segment_steps < 1:
            raise ValueError("segment_steps must be at least 1")
        if self.n_train % self.batch:
            raise ValueError(f"n_train {self.n_train} must be a multiple of the batch {self.batch}")
        if self.bits is not None and self.bits not in aqsgd.ACTIVATION_BITS:
            raise ValueError(f"activation bits must be one of {aqsgd.ACTIVATION_BITS} or None")


def windows(tokens: torch.Tensor, cfg: CrewConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) windows of context + 1 bytes: train from the head of the text, val
    from its tail, no overlap."""
    span = cfg.shape.context + 1
    need = (cfg.n_train + cfg.n_val) * span
    if tokens.numel() < need:
        raise ValueError(f"{tokens.numel()} tokens, {need} needed")
    head = tokens[: cfg.n_train * span].long().view(cfg.n_train, span)
    tail = tokens[-cfg.n_val * span :].long().view(cfg.n_val, span)
    return head, tail


def epoch_order(cfg: CrewConfig, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    return torch.randperm(cfg.n_train, generator=g)


def schedule(cfg: CrewConfig) -> Iterator[list[list[torch.Tensor]]]:
    """Per step, per replica, the sample ids of each micro-batch.

    Replica d owns the samples i with i % data_parallel == d, for the whole run, and visits
    them in the epoch's shuffled order: its AQ-SGD caches then hold exactly its own samples,
    each seen first in epoch 0 (a sample moving to another replica would arrive there as a
    first pass in the middle of later ones)."""
    share = cfg.micro_batch * cfg.micro_batches
    dp = cfg.data_parallel
    for epoch in range(cfg.epochs):
        order = epoch_order(cfg, epoch)
        own = [order[order % dp == d] for d in range(dp)]
        for s in range(cfg.steps_per_epoch):
            yield [[own[d][s * share + m * cfg.micro_batch : s * share + (m + 1) * cfg.micro_batch]
                    for m in range(cfg.micro_batches)] for d in range(dp)]


@dataclass
class Transcript:
    """sha256 of every boundary message, in order, by neighbour; and of each step's
    all-reduce: this member's contribution and the reduced gradient it applied."""

    sent: dict[int, list[bytes]] = field(default_factory=dict)  # by destination rank
    received: dict[int, list[bytes]] = field(default_factory=dict)  # by source rank
    reduced: list[tuple[bytes, bytes]] = field(default_factory=list)
    sent_bytes: int = 0
    forward_by_step: list[int] = field(default_factory=list)  # activation bytes sent, per step

    def on_send(self, dst: int, data: bytes, forward: bool) -> None:
        self.sent.setdefault(dst, []).append(hashlib.sha256(data).digest())
        self.sent_bytes += len(data)
        if forward:
            self.forward_by_step[-1] += len(data)

    def on_recv(self, src: int, data: bytes) -> None:
        self.received.setdefault(src, []).append(hashlib.sha256(data).digest())


class Behaviour:
    """How a member trains. This base class is the honest member; the crew's attack
    catalog (node/compute/crew/cheats.py) overrides single hooks, the way the single-node
    catalog swaps a step rule, so a cheat runs the same worker code and commits its real
    states, exactly as a cheating operator's daemon would."""

    name = "honest"

    def input_ids(self, ids: torch.Tensor, step: int) -> torch.Tensor:
        """Which samples' bytes stage 0 embeds for the micro-batch `ids`."""
        return ids

    def skip_backward(self, step: int) -> bool:
        """Skip the backward pass: no gradients, zeros sent upstream."""
        return False

    def boundary_grad(self, grad: torch.Tensor, step: int) -> torch.Tensor:
        """The gradient sent upstream for a micro-batch."""
        return grad

    def contribution(self, flat: torch.Tensor, step: int) -> None:
        """Change this member's all-reduce contribution in place (before it is hashed and sent)."""

    def skip_update(self, step: int) -> bool:
        """Skip the optimizer step."""
        return False

    def after_step(self, module: torch.nn.Module, step: int) -> None:
        """Change the weights after the optimizer step."""


HONEST = Behaviour()


class ProofSink(Protocol):
    """Where a member's proof material goes (node/compute/crew/proof.py): every raw
    message it received (its replicas' gradients included) and its state at every boundary."""

    def on_recv(self, src: int, data: bytes) -> None: ...

    def checkpoint(self, worker: StageWorker, index: int) -> None: ...

    @property
    def digests(self) -> list[bytes]: ...


def _digest(t: torch.Tensor) -> bytes:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).digest()


class StageWorker:
    """Member `rank` of a crew: one replica of one stage, with its modules, optimizer,
    boundary codecs and transcript. Its neighbours are the same replica of the stages
    before and after it; its gradients are averaged with the stage's other replicas."""

    def __init__(self, cfg: CrewConfig, rank: int, channel: Channel, train: torch.Tensor,
                 behaviour: Behaviour = HONEST, sink: ProofSink | None = None,
                 spill_dir: Path | None = None) -> None:
        stage, replica = cfg.position(rank)
        self.cfg, self.rank, self.stage, self.replica, self.channel = cfg, rank, stage, replica, channel
        self.replicas = [cfg.rank(stage, d) for d in range(cfg.data_parallel)]
        self.first, self.last = stage == 0, stage == cfg.stages - 1
        self.prev = cfg.rank(stage - 1, replica) if not self.first else -1
        self.next = cfg.rank(stage + 1, replica) if not self.last else -1
        base = load_file(cfg.base) if cfg.base is not None else None  # safetensors: no pickle
        self.module = build_stage(cfg.shape, cfg.stages, stage, cfg.seed, base)
        self.opt = torch.optim.AdamW(self.module.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.train = train
        self.act_shape = (cfg.micro_batch, cfg.shape.context, cfg.shape.width)
        per_sample = (cfg.shape.context, cfg.shape.width)
        # A big dataset's caches live in files under spill_dir (aqsgd.ActivationCache).
        limit = aqsgd.MAX_RAM_CACHE_BYTES
        self.sender = None if self.last else aqsgd.BoundarySender(
            aqsgd.ActivationCache(cfg.n_train, per_sample, spill_dir, limit), cfg.bits, cfg.direct)
        self.receiver = None if self.first else aqsgd.BoundaryReceiver(
            aqsgd.ActivationCache(cfg.n_train, per_sample, spill_dir, limit))
        self.transcript = Transcript()
        self.losses: list[float] = []
        self.behaviour, self.sink = behaviour, sink
        self.steps_done = 0  # global step index of the next step

    def close(self) -> None:
        """Remove the caches' spill files (a no-op for caches in RAM)."""
        for codec in (self.sender, self.receiver):
            if codec is not None:
                codec.cache.close()

    def _send(self, dst: int, data: bytes) -> None:
        self.transcript.on_send(dst, data, forward=dst == self.next)
        self.channel.send(dst, data)

    def _recv(self, src: int) -> bytes:
        data = self.channel.recv(src)
        self.transcript.on_recv(src, data)
        if self.sink is not None:
            self.sink.on_recv(src, data)
        return data

    def step(self, micro: list[torch.Tensor]) -> float | None:
        """One GPipe step; the last stage returns the step's mean loss."""
        cfg, act, t = self.cfg, self.behaviour, self.steps_done
        self.transcript.forward_by_step.append(0)
        inputs: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        total = 0.0
        for ids in micro:
            if self.first:
                x: torch.Tensor = self.train[act.input_ids(ids, t), :-1]
            else:
                assert self.receiver is not None
                x = self.receiver.decode(ids, self._recv(self.prev), self.act_shape).requires_grad_(True)
            inputs.append(x)
            y = self.module(x)
            if self.last:
                loss = F.cross_entropy(y.reshape(-1, y.shape[-1]), self.train[ids, 1:].reshape(-1))
                total += float(loss.detach())
                outputs.append(loss / cfg.micro_batches)
            else:
                assert self.sender is not None
                self._send(self.next, self.sender.encode(ids, y))
                outputs.append(y)
        skip = act.skip_backward(t)
        for m in reversed(range(len(inputs))):
            self._backward(inputs[m], outputs[m], skip, t)
        if skip:
            for p in self.module.parameters():
                p.grad = torch.zeros_like(p)
        if self.cfg.data_parallel > 1:
            self._all_reduce()
        if not act.skip_update(t):
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        act.after_step(self.module, t)
        self.steps_done += 1
        if self.last:
            self.losses.append(total / cfg.micro_batches)
            return self.losses[-1]
        return None

    def _backward(self, x: torch.Tensor, y: torch.Tensor, skip: bool, t: int) -> None:
        """One micro-batch's backward: receive the output gradient (all but the last
        stage), run it through the stage, send the input gradient (all but the first)."""
        grad = None if self.last else aqsgd.decode_grad(self._recv(self.next), self.act_shape)
        if self.first:
            if not skip:
                y.backward(grad)  # type: ignore[no-untyped-call]
            return
        if skip:
            x_grad = torch.zeros(self.act_shape)
        else:
            y.backward(grad)  # type: ignore[no-untyped-call]
            assert x.grad is not None
            x_grad = x.grad
        self._send(self.prev, aqsgd.encode_grad(self.behaviour.boundary_grad(x_grad, t), self.cfg.grad_bits))

    def _all_reduce(self) -> None:
        """Average the stage's gradients over its replicas. Each replica sends its flat
        gradient to every other over the crew's signed channels and adds all of them up in
        replica order, so every replica applies the same bits and every contribution is
        signed by its author: a replica that puts one gradient in and commits another is
        convicted like a boundary liar (crosscheck.blame), which gloo's anonymous
        all_reduce could not do. For two replicas the bytes moved equal a ring
        all-reduce's; for D they are D-1 gradients per member instead of 2(D-1)/D."""
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.behaviour.contribution(flat, self.steps_done)
        contribution = _digest(flat)
        mine = aqsgd.encode_grad(flat, None)
        parts: dict[int, torch.Tensor] = {self.rank: flat}
        for peer in self.replicas:  # one fixed order of pairs: deadlock-free with blocking sends
            if peer < self.rank:
                parts[peer] = aqsgd.decode_grad(self._recv(peer), flat.shape)
                self._send(peer, mine)
            elif peer > self.rank:
                self._send(peer, mine)
                parts[peer] = aqsgd.decode_grad(self._recv(peer), flat.shape)
        total = parts[self.replicas[0]].clone()
        for peer in self.replicas[1:]:
            total += parts[peer]
        total /= self.cfg.data_parallel
        self.transcript.reduced.append((contribution, _digest(total)))
        offset = 0
        for g in grads:
            g.copy_(total[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    @torch.no_grad()
    def evaluate(self, val: torch.Tensor) -> float | None:
        """Held-out loss (nats per byte) through replica 0's pipeline, fp32 across
        boundaries, in micro-batches; its last stage returns it (other replicas: None)."""
        cfg = self.cfg
        if self.replica != 0:
            return None
        total, n = 0.0, 0
        for start in range(0, val.shape[0], cfg.micro_batch):
            rows = val[start : start + cfg.micro_batch]
            shape = (rows.shape[0], cfg.shape.context, cfg.shape.width)
            x = rows[:, :-1] if self.first else aqsgd.decode_grad(self.channel.recv(self.prev), shape)
            y = self.module(x)
            if self.last:
                total += float(F.cross_entropy(y.reshape(-1, y.shape[-1]), rows[:, 1:].reshape(-1),
                                               reduction="sum"))
                n += rows[:, 1:].numel()
            else:
                self.channel.send(self.next, aqsgd.encode_grad(y, None))
        return total / n if self.last else None


@dataclass(frozen=True)
class StageResult:
    rank: int
    stage: int
    replica: int
    losses: list[float]
    val_loss: float | None
    sent_bytes: int
    forward_by_step: list[int]
    steps_per_epoch: int
    sent: dict[int, list[bytes]]
    received: dict[int, list[bytes]]
    reduced: list[tuple[bytes, bytes]]
    params_digest: bytes
    step_seconds: list[float]
    state_blob: bytes  # the stage's final weights, canonical names, as safetensors
    state_digests: list[bytes] = field(default_factory=list)  # committed, one per boundary
    received_sigs: dict[int, list[bytes]] = field(default_factory=dict)  # by source, signed channels

    def state(self) -> dict[str, torch.Tensor]:
        return load(self.state_blob)

    @property
    def forward_bytes(self) -> int:
        return sum(self.forward_by_step)

    @property
    def forward_bytes_after_first_epoch(self) -> int:
        return sum(self.forward_by_step[self.steps_per_epoch :])


def params_digest(module: torch.nn.Module) -> bytes:
    h = hashlib.sha256()
    for name, p in module.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.digest()


def run_stage(cfg: CrewConfig, rank: int, channel: Channel, tokens: torch.Tensor,
              max_steps: int | None = None, after_step: Callable[[int, StageWorker], None] | None = None,
              behaviour: Behaviour = HONEST, sink: ProofSink | None = None,
              spill_dir: Path | None = None) -> StageResult:
    """Train this member's stage for the whole schedule (or its first `max_steps` steps),
    then evaluate; every member calls it with the same config and tokens, in its own
    process. `after_step(i, worker)` runs after step i (the launcher's progress reports and
    fault injection); `sink`
    takes the proof material, with a checkpoint at every one of `cfg.boundaries`;
    `spill_dir` holds AQ-SGD caches too big for RAM."""
    train, val = windows(tokens, cfg)
    worker = StageWorker(cfg, rank, channel, train, behaviour, sink, spill_dir)
    try:
        return _train_and_evaluate(cfg, worker, val, max_steps, after_step)
    finally:
        worker.close()


def _train_and_evaluate(cfg: CrewConfig, worker: StageWorker, val: torch.Tensor, max_steps: int | None,
                        after_step: Callable[[int, StageWorker], None] | None) -> StageResult:
    sink = worker.sink
    bounds = cfg.boundaries(max_steps)
    if sink is not None:
        sink.checkpoint(worker, 0)
    times: list[float] = []
    for i, micro in enumerate(schedule(cfg)):
        if i >= bounds[-1]:
            break
        t = time.perf_counter()
        loss = worker.step(micro[worker.replica])
        times.append(time.perf_counter() - t)
        if sink is not None and i + 1 in bounds:
            sink.checkpoint(worker, bounds.index(i + 1))
        if after_step is not None:
            after_step(i, worker)
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {i}")
    val_loss = worker.evaluate(val)
    tr = worker.transcript
    return StageResult(worker.rank, worker.stage, worker.replica, worker.losses, val_loss, tr.sent_bytes,
                       tr.forward_by_step, cfg.steps_per_epoch, tr.sent, tr.received, tr.reduced,
                       params_digest(worker.module), times,
                       save(canonical_state(worker.module, cfg.shape, cfg.stages, worker.stage)),
                       list(sink.digests) if sink is not None else [])
