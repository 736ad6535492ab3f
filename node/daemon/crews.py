"""A daemon's crew member: rendezvous over the p2p network, then one member process.

A market crew (docs/parallel.md) has one member per daemon. Each daemon's compute job
for its rank (`CrewTrainJob`, answered by node/compute/crew/market.py) needs the crew's
torch.distributed store, which rank 0 hosts. The rendezvous is two steps:

- rank 0's daemon picks a free port on its crew host, starts its member process (which
  hosts the store there) and tells every other member where it is, with a signed direct
  message (`CrewAddress`, resent every `RESEND_S` until the crew has formed or the offer
  expires: a member may start its job a block later);
- every other daemon waits (at most `RENDEZVOUS_S`) for a `CrewAddress` of its crew whose
  envelope rank 0 signed (anyone else's is dropped), then starts its own member process,
  which joins the store.

The member processes then talk gloo over TCP to each other directly, every boundary
message signed with the member daemon's node key (`SignedChannel` under the crew's tag),
so a crew's transcript holds the very keys the chain elected. A member that vanishes
breaks its neighbours' connections: their processes fail, their jobs end with an abort
(`CrewAbort` on the chain), and a member process whose daemon was killed exits on its own.

The service's inbound side is a tap on the daemon's network (`node.daemon.network.Tap`),
like the link service's: the chain core never sees these messages.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from protocol.commands import MessageReceived
from protocol.errors import PolnetError
from protocol.identity import Keypair, node_id
from protocol.market.crews import crew_tag
from protocol.market.errors import OutOfBounds
from protocol.market.messages import CrewAddress, check_crew_address
from protocol.market.state import Status

if TYPE_CHECKING:  # torch: imported by the runner on a crew job, never at daemon start
    import torch

    from node.compute.crew.launch import Progress
    from node.compute.crew.market import MemberRun
    from node.compute.crew.pipeline import CrewConfig
    from node.daemon.progress import ProgressTracker

log = logging.getLogger("polnet.crews")

#: How long a member waits for rank 0's address (its daemon may start the job a block or
#: two after this one, on a loaded box several seconds later).
RENDEZVOUS_S = 120.0
#: Rank 0 resends its address this often while the offer is live.
RESEND_S = 2.0
#: An offer lives this long (then the crew has formed, or failed and aborted).
OFFER_TTL_S = 180.0
#: Addresses kept for crews whose member has not asked yet (bounded: a flood of them
#: from peers costs a map of this size, never more).
MAX_PENDING = 64
#: A member's whole run: past it, the member is stopped and the crew aborts.
MEMBER_DEADLINE_S = 1800.0
#: How long a member waits on a neighbour inside the run (gloo's own timeout).
NEIGHBOUR_TIMEOUT_S = 120.0


@dataclass
class _Offer:
    tag: bytes
    members: tuple[bytes, ...]
    host: str
    port: int
    expires: float


class CrewRendezvousError(PolnetError):
    """No address came from the crew's rank 0 in time."""


class CrewRendezvous:
    """The trio side: rank 0's offers, resent to its members; the addresses members were
    sent, until their job asks. `observe` is the network tap's hook."""

    def __init__(self, network: Any, key: Keypair, clock: Any = time.monotonic,
                 my_crews: Callable[[], dict[bytes, bytes]] | None = None) -> None:
        self.network = network
        self.key = key
        self.clock = clock
        #: The crews this node sits in now, tag -> rank 0's key (from the committed chain);
        #: None: take any crew's (tests of the service alone).
        self.my_crews = my_crews
        self._offers: dict[bytes, _Offer] = {}
        self._received: OrderedDict[tuple[bytes, bytes], CrewAddress] = OrderedDict()
        self._arrived = trio.Event()
        self.dropped = 0

    def observe(self, msg: MessageReceived) -> bool:
        """Keep a crew address a peer sent us; True if `msg` was one (kept or not)."""
        if not isinstance(msg.body, CrewAddress):
            return False
        try:
            check_crew_address(msg.body)
            # Rule: only the rank 0 of a crew this node sits in right now is heard, so no
            # peer can fill the map with addresses and push a real one out.
            if self.my_crews is not None and self.my_crews().get(msg.body.crew) != msg.sender:
                raise OutOfBounds("not the rank 0 of a crew this node is in")
        except OutOfBounds as exc:
            self.dropped += 1
            log.info("crew address refused", extra={"peer": node_id(msg.sender), "error": str(exc)})
            return True
        self._received[(msg.body.crew, msg.sender)] = msg.body
        self._received.move_to_end((msg.body.crew, msg.sender))
        while len(self._received) > MAX_PENDING:
            self._received.popitem(last=False)
        self._arrived.set()
        self._arrived = trio.Event()
        return True

    def offer(self, tag: bytes, members: tuple[bytes, ...], host: str, port: int) -> None:
        self._offers[tag] = _Offer(tag, members, host, port, self.clock() + OFFER_TTL_S)

    def withdraw(self, tag: bytes) -> None:
        self._offers.pop(tag, None)

    async def wait_for(self, tag: bytes, rank0: bytes, timeout_s: float) -> tuple[str, int]:
        """Rank 0's address for crew `tag`, signed by `rank0` (anyone else's is ignored)."""
        with trio.move_on_after(timeout_s):
            while True:
                arrived = self._arrived
                addr = self._received.pop((tag, rank0), None)
                if addr is not None:
                    return addr.host, addr.port
                await arrived.wait()
        raise CrewRendezvousError(f"no address from the crew's rank 0 {node_id(rank0)} in {timeout_s:.0f} s")

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.resend()
            await trio.sleep(RESEND_S)

    async def resend(self) -> None:
        now = self.clock()
        for tag in [t for t, o in self._offers.items() if o.expires <= now]:
            del self._offers[tag]
        for offer in list(self._offers.values()):
            msg = CrewAddress(offer.tag, offer.host, offer.port, int(time.time() * 1000 + OFFER_TTL_S * 1000))
            for member in offer.members[1:]:
                with trio.move_on_after(RESEND_S):
                    try:
                        await self.network.send_to(member, msg)
                    except PolnetError as exc:  # not connected yet: the next round tries again
                        log.debug("crew address send failed",
                                  extra={"peer": node_id(member), "error": str(exc)})


def crew_host(listen_host: str, configured: str = "") -> str:
    """The address this node's crew store listens on and is announced at: the configured
    one, else the listen host, else loopback when the node listens on every interface."""
    host = configured or listen_host
    if ipaddress.ip_address(host).is_unspecified:
        return "127.0.0.1"
    return host


class NetworkCrewRunner:
    """`node.compute.crew.market.CrewRunner` for a daemon: called in the compute thread,
    it rendezvouses through `CrewRendezvous` (on the trio loop) and runs this daemon's own
    member process. `cheat`: a crew cheat of node/compute/crew/cheats.py (a test knob)."""

    def __init__(self, key: Keypair, rendezvous: CrewRendezvous, work_dir: Path, host: str,
                 cheat: str | None = None, deadline_s: float = MEMBER_DEADLINE_S,
                 neighbour_timeout_s: float = NEIGHBOUR_TIMEOUT_S,
                 progress: ProgressTracker | None = None) -> None:
        self.progress = progress
        self.key = key
        self.rendezvous = rendezvous
        self.work_dir = work_dir
        self.host = host
        self.cheat = cheat or None
        self.deadline_s = deadline_s
        self.neighbour_timeout_s = neighbour_timeout_s

    def train(self, task_id: bytes, cfg: CrewConfig, tokens: torch.Tensor, rank: int,
              members: tuple[bytes, ...], attempt: int = 0) -> MemberRun | None:
        from node.compute.crew.launch import CrewAborted, free_port, run_member
        from node.compute.crew.market import MemberRun

        if members[rank] != self.key.public:
            return None  # not our seat: never train under another member's name
        tag = crew_tag(task_id, members, attempt)
        proof_dir = self.work_dir / task_id.hex() / tag.hex()[:16]
        if rank == 0:
            host, port = self.host, free_port(self.host)
            trio.from_thread.run_sync(self.rendezvous.offer, tag, members, host, port)
        else:
            try:
                host, port = trio.from_thread.run(self.rendezvous.wait_for, tag, members[0], RENDEZVOUS_S)
            except CrewRendezvousError as exc:
                raise CrewAborted(str(exc)) from None
        log.info("crew member starting", extra={"task": task_id.hex()[:16], "rank": rank,
                                               "store": f"{host}:{port}"})
        stage = cfg.position(rank)[0]
        if self.progress is not None:
            self.progress.set_total(cfg.total_steps)
            self.progress.note(f"rank {rank} stage {stage}: waiting for the crew")

        def stepped(p: Progress) -> None:
            if self.progress is not None:
                self.progress.advance(p.step)
                loss = f", loss {p.loss:.3f}" if p.loss is not None else ""
                self.progress.note(f"rank {rank} stage {stage}: sent {p.sent_bytes / 1e6:.2f} MB{loss}")

        try:
            result = run_member(cfg, tokens, rank, host, port, self.key.seed(), list(members), tag, proof_dir,
                                self.deadline_s, self.cheat, self.neighbour_timeout_s, stepped,
                                bind=self.host)
        finally:
            if rank == 0:
                trio.from_thread.run_sync(self.rendezvous.withdraw, tag)
        return MemberRun(result, proof_dir)


def my_crews(daemon: Any) -> dict[bytes, bytes]:
    """The crews the daemon's key sits in on its committed chain, training now: tag ->
    the crew's rank 0."""
    chain = daemon.chain
    if chain is None:
        return {}
    me = daemon.key.public
    market = chain.core.market
    out = {}
    for tid in market.task_keys_where(lambda t: t.status == Status.TRAINING and me in t.crew):
        task = market.tasks[tid]
        out[crew_tag(tid, task.crew, task.replacements)] = task.crew[0]
    return out


class CrewsByHeight:
    """`my_crews`, computed once per committed height: every CrewAddress a peer sends is
    checked against it, and a scan of the chain's tasks per message would let a peer
    sending them make the node load its market over and over."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self._height = -1
        self._crews: dict[bytes, bytes] = {}

    def __call__(self) -> dict[bytes, bytes]:
        chain = self.daemon.chain
        height = chain.core.ledger.height if chain is not None else -1
        if height != self._height:
            self._crews, self._height = my_crews(self.daemon), height
        return self._crews


async def start_crews(daemon: Any, network: Any, nursery: trio.Nursery) -> Any:
    """Start the rendezvous service; returns the network with crew addresses tapped."""
    from node.daemon.network import Tap

    service = CrewRendezvous(network, daemon.key, my_crews=CrewsByHeight(daemon))
    await nursery.start(service.run)
    daemon.crews = service
    return Tap(network, service.observe)


