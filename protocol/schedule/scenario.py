"""Scenario and assignment documents (the DT-FM scenario format), as plain values.

A scenario (`../shared/scenarios/dtfm/README.md`) holds `num_devices`, `num_stages`,
`dp_degree`, the `delay_ms` and `bandwidth_gbps` matrices and a `workload` object.
Its message sizes (`activation_gb`, `gradient_gb`, DT-FM's own rounding) are pinned
for its own shape. Optional extensions read here: `devices` (a list of
{"flops": FLOP/s, "memory_gb": GiB}) switches on the compute and memory terms, and
`workload.micro_batch_seqs` sets the pipeline's micro-batch.

An assignment document is {"assignment": [[stage, dp_rank], ...]} in device order.
The shell reads and writes the files; this module only checks and converts values,
raising ScheduleError with the offending field named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.schedule.errors import ScheduleError
from protocol.schedule.model import MAX_DEVICES, Device, Links, PinnedSizes, Shape, Workload

GB = 1e9
GIB = 2**30
#: The DT-FM scenarios' devices are unspecified; when a scenario has no `devices`
#: they are taken as identical and only communication is modelled.
PLACEHOLDER_DEVICE = Device(flops=1e14, memory_bytes=80 * GIB)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    devices: tuple[Device, ...]
    links: Links
    workload: Workload
    shape: Shape
    #: Whether the scenario says what its devices are (compute and memory modelled).
    has_devices: bool


def _field(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "scenario") -> Any:
    if key not in doc:
        raise ScheduleError(f"{where}: missing field {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ScheduleError(f"{where}: field {key!r} has the wrong type")
    return value


def _number(doc: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    if key not in doc and default is not None:
        return default
    return float(_field(doc, key, (int, float), where))


def _int(doc: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    if key not in doc and default is not None:
        return default
    value = _field(doc, key, (int, float), where)
    if float(value) != int(value):
        raise ScheduleError(f"{where}: field {key!r} must be an integer")
    return int(value)


def _matrix(doc: Mapping[str, Any], key: str, n: int) -> list[list[float]]:
    rows = _field(doc, key, list)
    if len(rows) != n:
        raise ScheduleError(f"scenario: {key} has {len(rows)} rows, expected {n}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n:
            raise ScheduleError(f"scenario: {key}[{i}] must be a list of {n} numbers")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row):
            raise ScheduleError(f"scenario: {key}[{i}] holds a non-number")
        out.append([float(x) for x in row])
    return out


def workload_from_doc(w: Mapping[str, Any], shape: Shape | None) -> Workload:
    where = "workload"
    pinned = None
    if shape is not None and "activation_gb" in w and "gradient_gb" in w:
        pinned = PinnedSizes(
            shape,
            round(_number(w, "activation_gb", where) * GB),
            round(_number(w, "gradient_gb", where) * GB),
        )
    return Workload(
        num_layers=_int(w, "num_layers", where),
        hidden_size=_int(w, "hidden_size", where),
        seq_len=_int(w, "seq_len", where),
        global_batch_seqs=_number(w, "global_batch_seqs", where),
        micro_batch_seqs=_number(w, "micro_batch_seqs", where, 1.0),
        num_params=_number(w, "num_params", where, 0.0),
        vocab_size=_int(w, "vocab_size", where, 0),
        gradient_bytes_per_param=_int(w, "gradient_bytes_per_param", where, 4),
        activation_bytes_per_elem=_int(w, "activation_bytes_per_elem", where, 2),
        activation_elems_per_seq=_int(w, "activation_elems_per_seq_dtfm", where, 0),
        pinned=pinned,
    )


def devices_from_doc(items: Any, n: int) -> tuple[Device, ...]:
    if not isinstance(items, list) or len(items) != n:
        raise ScheduleError(f"scenario: devices must be a list of {n} objects")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ScheduleError(f"scenario: devices[{i}] must be an object")
        where = f"devices[{i}]"
        out.append(Device(_number(item, "flops", where), round(_number(item, "memory_gb", where) * GIB)))
    return tuple(out)


def scenario_from_doc(doc: Any) -> Scenario:
    if not isinstance(doc, Mapping):
        raise ScheduleError("scenario: expected a JSON object")
    n = _int(doc, "num_devices", "scenario")
    if not 1 <= n <= MAX_DEVICES:
        raise ScheduleError(f"scenario: num_devices {n} outside 1..{MAX_DEVICES}")
    shape = Shape(_int(doc, "num_stages", "scenario"), _int(doc, "dp_degree", "scenario"))
    if shape.size != n:
        raise ScheduleError(f"scenario: {shape.stages} stages x {shape.dp_degree} ranks is not {n} devices")
    links = Links.from_rows(_matrix(doc, "delay_ms", n), _matrix(doc, "bandwidth_gbps", n))
    workload = workload_from_doc(_field(doc, "workload", Mapping), shape)
    has_devices = "devices" in doc
    devices = devices_from_doc(doc["devices"], n) if has_devices else (PLACEHOLDER_DEVICE,) * n
    name = doc.get("name", "scenario")
    return Scenario(str(name)[:256], devices, links, workload, shape, has_devices)


def assignment_doc(placement: Sequence[tuple[int, int]]) -> dict[str, Any]:
    return {"assignment": [[stage, rank] for stage, rank in placement]}


def placement_from_doc(doc: Any, shape: Shape) -> list[tuple[int, int]]:
    """The (stage, dp_rank) list of an assignment document, checked against `shape`
    (a bijection onto stages x ranks is checked by `cost.grid_of`)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("assignment"), list):
        raise ScheduleError('assignment: expected {"assignment": [[stage, dp_rank], ...]}')
    items = doc["assignment"]
    if len(items) != shape.size:
        raise ScheduleError(f"assignment: {len(items)} entries for {shape.size} devices")
    out = []
    for i, item in enumerate(items):
        ok = isinstance(item, list) and len(item) == 2 and all(type(x) is int for x in item)
        if not ok:
            raise ScheduleError(f"assignment[{i}] must be [stage, dp_rank]")
        out.append((item[0], item[1]))
    return out
