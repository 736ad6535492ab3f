"""Fault actions: what can go wrong, at what virtual time.

A fault plan is a plain tuple of these records, sorted by `at`. They are data (not
callbacks) so that a plan can be written in TOML, printed in a failure message and
replayed. In a file each action is a table with an `action` key naming it, e.g.
`{at = 5000, action = "partition", groups = [[0, 1], [2, 3]]}`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from netsim.errors import SimConfigError


@dataclass(frozen=True, slots=True)
class Partition:
    """Split the network: links work only inside a group. Unlisted nodes form one more group."""

    at: int
    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class Isolate:
    """Cut one node off from every other node (the rest stay connected as they were)."""

    at: int
    node: int


@dataclass(frozen=True, slots=True)
class Heal:
    """Undo every partition, isolation and clog."""

    at: int


@dataclass(frozen=True, slots=True)
class Crash:
    """Stop a node: its core, timers and running compute are gone; its disk stays.

    `lose_unsynced` models kill -9 between a write and its fsync: the writes made by the
    node's most recent handle() call are rolled back.
    """

    at: int
    node: int
    lose_unsynced: bool = False


@dataclass(frozen=True, slots=True)
class Restart:
    """Build a fresh core for a crashed node from its disk and send it Tick."""

    at: int
    node: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Freeze a node (a GC pause, SIGSTOP): it handles nothing until Resume."""

    at: int
    node: int


@dataclass(frozen=True, slots=True)
class Resume:
    at: int
    node: int


@dataclass(frozen=True, slots=True)
class Clog:
    """Hold every message sent on a link, or to/from a node, until `at + duration_ms`."""

    at: int
    duration_ms: int
    node: int | None = None
    link: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class SetLoss:
    """Change the loss probability of every link, or of one directed link."""

    at: int
    loss: float
    link: tuple[int, int] | None = None


FaultAction = Partition | Isolate | Heal | Crash | Restart | Pause | Resume | Clog | SetLoss

ACTIONS: dict[str, type[Any]] = {
    "partition": Partition,
    "isolate": Isolate,
    "heal": Heal,
    "crash": Crash,
    "restart": Restart,
    "pause": Pause,
    "resume": Resume,
    "clog": Clog,
    "set_loss": SetLoss,
}
_NAMES = {cls: name for name, cls in ACTIONS.items()}

#: The field kinds a fault action may use, checked when a plan is loaded.
_FIELD_KINDS: dict[str, str] = {
    "at": "int",
    "node": "int",
    "duration_ms": "int",
    "groups": "groups",
    "lose_unsynced": "bool",
    "link": "link",
    "loss": "prob",
}
MAX_GROUPS = 64


def action_name(action: FaultAction) -> str:
    return _NAMES[type(action)]


def action_to_dict(action: FaultAction) -> dict[str, Any]:
    """The TOML/JSON table of an action (None fields left out, tuples as lists)."""
    out: dict[str, Any] = {"action": action_name(action)}
    for f in dataclasses.fields(action):
        value = getattr(action, f.name)
        if value is None:
            continue
        if f.name == "groups":
            value = [list(g) for g in value]
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def action_from_dict(raw: Any, where: str) -> FaultAction:
    """Parse one action table, raising SimConfigError that names `where` and the field."""
    if not isinstance(raw, dict):
        raise SimConfigError(f"{where}: a fault action must be a table, got {type(raw).__name__}")
    name = raw.get("action")
    cls = ACTIONS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise SimConfigError(f"{where}.action: must be one of {sorted(ACTIONS)}, got {name!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names - {"action"})
    if unknown:
        raise SimConfigError(f"{where}: unknown field(s) {unknown} for action {name!r}")
    kwargs = {key: _field(raw[key], _FIELD_KINDS[key], f"{where}.{key}") for key in names & set(raw)}
    try:
        action: FaultAction = cls(**kwargs)
    except TypeError as exc:
        raise SimConfigError(f"{where}: {exc}") from exc
    return action


def _field(value: Any, kind: str, where: str) -> Any:
    if kind == "int":
        if type(value) is not int or value < 0:
            raise SimConfigError(f"{where}: must be a non-negative integer, got {value!r}")
        return value
    if kind == "bool":
        if type(value) is not bool:
            raise SimConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if kind == "prob":
        if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
            raise SimConfigError(f"{where}: must be a probability in [0, 1], got {value!r}")
        return float(value)
    if kind == "link":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise SimConfigError(f"{where}: must be a pair [src, dst], got {value!r}")
        return (_field(value[0], "int", where), _field(value[1], "int", where))
    if not isinstance(value, (list, tuple)) or not 0 < len(value) <= MAX_GROUPS:
        raise SimConfigError(f"{where}: must be a list of 1..{MAX_GROUPS} groups, got {value!r}")
    groups = []
    for g in value:
        if not isinstance(g, (list, tuple)):
            raise SimConfigError(f"{where}: each group must be a list of node indices, got {g!r}")
        groups.append(tuple(_field(v, "int", where) for v in g))
    return tuple(groups)


def check_nodes(action: FaultAction, nodes: int, where: str) -> None:
    """Reject node indices outside 0..nodes-1 and nodes listed in two groups."""
    indices: list[int] = []
    if isinstance(action, (Isolate, Crash, Restart, Pause, Resume)):
        indices.append(action.node)
    if isinstance(action, Clog):
        if (action.node is None) == (action.link is None):
            raise SimConfigError(f"{where}: a clog names exactly one of `node` or `link`")
        if action.node is not None:
            indices.append(action.node)
    if isinstance(action, (Clog, SetLoss)) and action.link is not None:
        indices.extend(action.link)
    if isinstance(action, Partition):
        flat = [i for g in action.groups for i in g]
        if len(flat) != len(set(flat)):
            raise SimConfigError(f"{where}.groups: a node appears in more than one group")
        indices.extend(flat)
    bad = [i for i in indices if not 0 <= i < nodes]
    if bad:
        raise SimConfigError(f"{where}: node index {bad[0]} out of range 0..{nodes - 1}")
