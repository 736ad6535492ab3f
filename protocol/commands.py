"""The sans-IO contract between a protocol core and the shell that drives it.

A core is `handle(now, event) -> list[Command]`. Events come in from the shell
(a message arrived, a timer fired, compute finished, a blob arrived); commands go out
as plain data for the shell to execute (publish, set a timer, run compute, persist,
fetch a blob). node/ executes them with trio, py-libp2p, sqlite and torch; netsim
executes them under virtual time. Both drive the *same* cores, which is what makes a
netsim run evidence about the real daemon.

Time is an integer number of milliseconds on the shell's clock (virtual in netsim).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# --- topics --------------------------------------------------------------------------------

TOPIC_TXS = "polnet/txs/1"
TOPIC_CONSENSUS = "polnet/consensus/1"
TOPIC_ADVERTS = "polnet/adverts/1"
TOPICS = (TOPIC_TXS, TOPIC_CONSENSUS, TOPIC_ADVERTS)


# --- events (shell -> core) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A verified envelope arrived on a topic (or a direct stream)."""

    topic: str
    sender: bytes
    body: Any
    raw: bytes


@dataclass(frozen=True, slots=True)
class TimerFired:
    key: str


@dataclass(frozen=True, slots=True)
class ComputeDone:
    """A RunCompute finished; `result` is the job-specific result record."""

    job_id: str
    result: Any


@dataclass(frozen=True, slots=True)
class BlobFetched:
    digest: bytes
    data: bytes | None  # None: no peer could supply a blob with this hash in time


@dataclass(frozen=True, slots=True)
class Tick:
    """Sent once when a core starts (and after restart) so it can arm its timers."""


@dataclass(frozen=True, slots=True)
class LocalRequest:
    """A request from this node's own operator (the admin endpoint), not from a peer: a
    task to submit, a task to cancel. The core refuses a bad one with a PolnetError,
    which the shell hands back to the operator; what it accepts it persists first."""

    body: Any


Event = MessageReceived | TimerFired | ComputeDone | BlobFetched | Tick | LocalRequest


# --- commands (core -> shell) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    """Sign `msg` with the node key and gossip it on `topic`."""

    topic: str
    msg: Any


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send `msg` to one peer directly (block sync answers, pinpoint moves)."""

    peer: bytes
    msg: Any


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Fire TimerFired(key) at absolute time `at`; re-setting a key replaces it."""

    at: int
    key: str


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: str


@dataclass(frozen=True, slots=True)
class RunCompute:
    """Run a compute job (training segment, verification, one pinpointed operation).

    `job` is a declarative record; the shell decides how (torch, or netsim's
    synthetic trainer) and reports ComputeDone(job_id, result). `own_process`: the work
    runs in a process of its own (a crew member's run), so it neither waits for nor holds
    the node's compute queue, and the node's other duties go on beside it.
    """

    job_id: str
    job: Any
    flops: int
    own_process: bool = False


@dataclass(frozen=True, slots=True)
class Persist:
    """Durably store a record before acting on it (a committed block, a lock)."""

    kind: str
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Fetch:
    """Fetch a content-addressed blob of at most `max_size` bytes from any peer."""

    digest: bytes
    max_size: int


@dataclass(frozen=True, slots=True)
class Log:
    """A structured log line from the core (the core never logs by itself)."""

    level: str
    event: str
    fields: tuple[tuple[str, Any], ...] = ()


Command = Publish | SendTo | SetTimer | CancelTimer | RunCompute | Persist | Fetch | Log


class Core(Protocol):
    """Anything a shell can drive."""

    def handle(self, now: int, event: Event) -> Sequence[Command]: ...
