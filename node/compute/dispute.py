"""Run a whole dispute over one segment with torch: open it, play it, referee it."""

from __future__ import annotations

from node.compute.datasets import AnyDataset
from node.compute.tensors import TensorStore
from node.compute.trace import TorchSource, referee
from node.compute.trainer import Run
from protocol.encoding import sha256
from protocol.pol.arena import DisputeReport, Oracle, play
from protocol.pol.messages import DisputeOpen
from protocol.pol.oracle import HonestOracle, state_hash_of
from protocol.pol.spec import TaskSpec

DEFENDER_KEY = b"\xd0" * 32
CHALLENGER_KEY = b"\xc1" * 32


def open_segment(
    spec: TaskSpec, defender: Run, challenger: Run, segment: int, store: TensorStore
) -> DisputeOpen:
    k = spec.checkpoint_interval
    start, end = segment * k, (segment + 1) * k
    d_src, c_src = TorchSource(defender, store), TorchSource(challenger, store)
    return DisputeOpen(
        sha256(b"dispute" + spec.dataset_hash + segment.to_bytes(4, "big")),
        spec.dataset_hash,
        segment,
        start,
        k,
        state_hash_of(d_src.state_digests(start)),
        state_hash_of(d_src.state_digests(end)),
        state_hash_of(c_src.state_digests(end)),
        DEFENDER_KEY,
        CHALLENGER_KEY,
    )


def challenger_run(
    spec: TaskSpec, data: AnyDataset, defender: Run, segment: int, threads: int | None = None
) -> Run:
    """The verifier's honest re-execution, starting from the solver's (agreed) checkpoint."""
    start = segment * spec.checkpoint_interval
    return Run(spec, data, threads=threads, states={0: defender.state_at(0), start: defender.state_at(start)})


def dispute_segment(
    spec: TaskSpec,
    data: AnyDataset,
    defender: Run,
    challenger: Run,
    segment: int,
    tolerance: float,
    defender_oracle: Oracle | None = None,
    challenger_oracle: Oracle | None = None,
) -> DisputeReport:
    store = TensorStore()
    opened = open_segment(spec, defender, challenger, segment, store)
    d = defender_oracle or HonestOracle(TorchSource(defender, store))
    c = challenger_oracle or HonestOracle(TorchSource(challenger, store))
    return play(spec, opened, tolerance, d, c, lambda job: referee(job, data, store))
