"""Crew tasks on real daemon processes: the netsim crew cases (tests/test_market_crew_netsim.py)
on separate `polnet node run` processes on loopback, each crew member its own daemon with
its own member process, rendezvoused over the p2p network (node/daemon/crews.py).

One network of ten daemons (node 0 validates and submits; nine workers, so a crew of four
and a verifier for each member can be elected again without a killed one), two crew
tasks in turn:

- the first settles through the market with one cheating member (a worker staked far
  above the others trains its stage frozen, so the stake-weighted draw seats it): the
  validators convict it alone, it alone is slashed and unpaid, the three others are paid;
- in the second a member daemon is SIGKILLed while its crew trains: its member process
  dies with it, the others' crews break and they say so (`CrewAbort`), the killed one is
  slashed for silence at the training deadline, and the task is placed with a new crew
  and settles, nobody honest losing anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli.swarm_market import HONEST_PRICE, OPEN_PRICE, WORKER_STAKE
from netsim.scenarios.market.crew import crew_file, crew_submit
from node.config import RolesConfig
from tests.market_daemons import MarketNet

#: Ten daemons and their member processes: one of the heaviest suites, run apart from the
#: others of its weight (the Makefile runs xdist with --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.xdist_group("heavy-daemons")]

WORKERS = 9
CHEAT_STAKE = 40 * WORKER_STAKE
#: A crew task here takes one to three minutes; the second waits out a training deadline.
TASK_TIMEOUT_S = 600.0


def crew_roles() -> list[RolesConfig]:
    roles = [RolesConfig(validator=True)]
    for i in range(1, WORKERS + 1):
        cheat = i == WORKERS
        roles.append(RolesConfig(validator=True, worker=True, worker_price=HONEST_PRICE,
                                 worker_stake=CHEAT_STAKE if cheat else WORKER_STAKE,
                                 crew_cheat="frozen" if cheat else ""))
    return roles


def members(net: MarketNet, task: dict[str, Any]) -> list[int]:
    out = [net.index_of(m) for m in task["crew"]]
    assert None not in out, task["crew"]
    return [i for i in out if i is not None]


def slashed(net: MarketNet, task: dict[str, Any]) -> dict[int | None, list[str]]:
    out: dict[int | None, list[str]] = {}
    for p in task["penalties"]:
        out.setdefault(net.index_of(p["who"]), []).append(p["why"])
    return out


@pytest.mark.timeout(1800)
def test_crew_tasks_settle_a_cheating_member_alone_is_slashed_and_a_killed_one_is_replaced(
        tmp_path: Path) -> None:
    net = MarketNet(tmp_path / "net", crew_roles()).start()
    cheater = WORKERS
    try:
        first = net.submit_crew(crew_file(2, 2, 1), crew_submit(crew_file(2, 2, 1), 2, 2, 0, OPEN_PRICE))
        a = net.wait_status(first, ("SETTLED", "REFUNDED"), TASK_TIMEOUT_S)
        a = net.task(first)
        # Every worker measured its links (pings and a probe blob) and committed them to
        # the chain, where the crew placement reads them (protocol/market/linkcommit.py).
        net.wait(lambda: len(_committed_links(net)) == WORKERS, 120, "every worker's CommitLinks")
        committed = _committed_links(net)

        spec = crew_file(2, 2, 2)
        second = net.submit_crew(spec, crew_submit(spec, 2, 2, 1, OPEN_PRICE))
        net.wait_status(second, ("TRAINING",), TASK_TIMEOUT_S)
        crew = members(net, net.task(second))
        victim = next(i for i in crew if i != cheater)
        _wait_member_started(net, victim, TASK_TIMEOUT_S)
        # The member's daemon says what it is doing (what `swarm up` shows): its rank,
        # stage, and bytes sent, step by step.
        net.wait(lambda: "sent" in _job(net, victim).get("detail", ""), 60, f"node {victim}'s crew progress")
        job = _job(net, victim)
        assert job["kind"] == "crew-train" and job["total"] == 64 and job["detail"].startswith("rank "), job
        net.kill(victim)
        net.procs[victim] = None  # it stays down: the market must go on without it
        b = net.wait_status(second, ("SETTLED", "REFUNDED"), 2 * TASK_TIMEOUT_S)
        b = net.task(second)
        # What the submitter gets back: the whole model, assembled by node 0 from each
        # stage's committed final state, fetched from the members over the network.
        result = _get_json(f"{net.admin[0]}/task/{second}/result", 300)
    finally:
        net.stop()

    # The first task: the cheater sat in the crew (its stake makes that all but certain),
    # the validators convicted it and nobody else; the others were paid their shares.
    assert a["status"] == "SETTLED" and len(a["crew"]) == 4, a
    seated = members(net, a)
    assert cheater in seated, f"the heavy-staked cheater was not drawn ({seated}); the test needs it seated"
    assert [net.index_of(c) for c in a["convicted"]] == [cheater], a
    assert slashed(net, a) == {cheater: ["solver_cheat"]}, a["penalties"]
    share = a["gflops"] // 4
    assert a["paid"] == 3 * share * HONEST_PRICE, a

    # The second task: the killed member alone lost stake (silence); a new crew, without it,
    # trained the task and was paid.
    assert b["status"] == "SETTLED", b
    assert slashed(net, b).get(victim) == ["silence"], b["penalties"]
    assert victim not in members(net, b)
    assert all(i in (victim, cheater) for i in slashed(net, b)), b["penalties"]
    aborted = [i for i in crew if i != victim and net.log_events(i, "market.crew_aborted")]
    assert aborted, "no surviving member said its crew stopped"
    assert len(result["weights_blob"]) == 64 and 0.0 <= result["accuracy"] <= 1.0, result
    assert set(committed) == set(range(1, WORKERS + 1)), committed
    assert all(peers and all(p["delay_ms"] >= 0 for p in peers) for peers in committed.values()), committed


def _committed_links(net: MarketNet) -> dict[int | None, list[dict[str, Any]]]:
    """Node 0's chain's committed link reports, by reporter index (GET /links)."""
    from protocol.identity import public_key_from_node_id

    try:
        doc = _get_json(f"{net.admin[0]}/links", 10)
    except (OSError, ValueError):
        return {}
    return {net.index_of(public_key_from_node_id(c["reporter"]).hex()): c["peers"] for c in doc["committed"]}


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def _job(net: MarketNet, i: int) -> dict[str, Any]:
    """Node i's running compute job, from its /status."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{net.admin[i]}/status", timeout=5) as resp:
            job = json.loads(resp.read()).get("job")
    except (OSError, ValueError):
        return {}
    return job or {}


def _wait_member_started(net: MarketNet, i: int, timeout: float) -> None:
    net.wait(lambda: bool(net.log_events(i, "crew member starting")), timeout, f"node {i}'s crew member")
