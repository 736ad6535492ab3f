"""What the daemon's admin pages and the CLI need from the running node, declared once.

app.py and tasks.py used to probe the core and the compute runner with getattr/hasattr;
these protocols name what they read instead, so a change to the core that breaks a page
is a type error (mypy) rather than a page that silently shows nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from protocol.commands import Command, Event
from protocol.ledger.ledger import Ledger
from protocol.market.keyring import Keyring
from protocol.market.roles import ChainView, SubmitterRole
from protocol.market.state import MarketState, Task


class MarketCore(Protocol):
    """The composite core (`protocol.market.node.MarketNode`) as the admin pages read it."""

    me: bytes
    fee: int
    ledger: Ledger
    view: ChainView | None
    keyring: Keyring

    @property
    def market(self) -> MarketState: ...

    @property
    def submitter(self) -> SubmitterRole | None: ...

    def handle(self, now: int, event: Event) -> Sequence[Command]: ...


class BlobReader(Protocol):
    def read(self, digest: bytes) -> bytes | None: ...


class TrainedInfo(Protocol):
    accuracy: float
    attack: str | None


class MarketCompute(Protocol):
    """The compute runner (`node.daemon.compute.MarketComputeRunner`) as pages use it."""

    @property
    def blobs(self) -> BlobReader: ...

    @property
    def trained(self) -> dict[bytes, Any]: ...

    def __call__(self, job_id: str, job: Any) -> Any: ...

    def final_weights(self, task: Task, content_key: bytes | None = None) -> tuple[bytes, float]: ...


class Caller(Protocol):
    """The driver, as the admin endpoint hands it an operator's request."""

    async def call(self, event: Event) -> None: ...
