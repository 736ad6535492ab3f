"""The market side of `polnet swarm up`: who is a worker, a cheater or an adversary,
which tasks go in, and what the final report says about them.

Layout of N nodes: every node validates (funded and staked at genesis); node 0 is also
the whistleblower and the submitter; the others are workers, except the
`false_challengers` nodes before the cheaters, which challenge every ACCEPT without
checking (protocol.market.adversaries, the same role netsim runs). The last `cheaters`
workers train with an attack (node/compute's catalog, or a bisection cheat), cycling
through `cheats`, and ask a lower price than the honest workers; when there are
cheaters, the first task offers a price only they accept, so the run always shows a
cheat being placed, caught, slashed and refunded (the other tasks are open to every
worker, cheaters included, by stake-weighted election). `lazy` honest-priced workers
accept every segment without checking. With `private`, every task is private: its
dataset, checkpoints and weights are sealed, and only the parties the market elects
are handed its key (the report counts them per task).

The report's slashes are the ledger's own record of who lost stake or a bond, and why
(`protocol.market.views`, read from node 0's admin endpoint), not a stake comparison.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config import BISECTION_CHEATS, CHEATS, RolesConfig
from node.datadir import DataDir
from protocol.chain_params import PRESETS

FLOOR = PRESETS["local"].market.min_price_per_gflop
HONEST_PRICE = 2 * FLOOR
CHEAT_PRICE = FLOOR
#: A task only cheaters accept (their price is below it, the honest workers' above).
BAIT_PRICE = FLOOR + FLOOR // 2
OPEN_PRICE = 4 * FLOOR
WORKER_STAKE = 200_000
TERMINAL = ("SETTLED", "REFUNDED")
HTTP_TIMEOUT_S = 3.0
RESULT_TIMEOUT_S = 120.0


#: Every cheat a swarm worker can train with, in the order `--cheaters` cycles through.
ALL_CHEATS = (*CHEATS, *BISECTION_CHEATS)


def swarm_roles(n: int, cheaters: int, false_challengers: int = 0, lazy: int = 0,
                cheats: tuple[str, ...] = ALL_CHEATS) -> list[RolesConfig]:
    roles = [RolesConfig(validator=True, whistleblower=True)]
    first_cheat = n - cheaters
    first_liar = first_cheat - false_challengers
    for i in range(1, n):
        if first_liar <= i < first_cheat:
            roles.append(RolesConfig(validator=True, adversary="false_challenger"))
            continue
        cheat = cheats[(i - first_cheat) % len(cheats)] if i >= first_cheat else ""
        adversary = "lazy_verifier" if not cheat and i <= lazy else ""
        price = CHEAT_PRICE if cheat else HONEST_PRICE
        roles.append(RolesConfig(validator=True, worker=True, worker_stake=WORKER_STAKE, worker_price=price,
                                 cheat=cheat, adversary=adversary))
    return roles


def honest(role: RolesConfig) -> bool:
    return not role.cheat and not role.adversary


def task_docs(tasks: int, cheaters: int, private: bool = False) -> list[dict[str, Any]]:
    """Small real training tasks, alternating the two built-in datasets; `private`: every
    one sealed to the parties the market elects (`private = true` in a task file)."""
    docs = []
    for i in range(tasks):
        dataset = "digits" if i % 2 else "synthetic"
        price = BAIT_PRICE if cheaters and i == 0 else OPEN_PRICE
        doc: dict[str, Any] = {"dataset": dataset, "hidden": [16], "steps": 128, "checkpoint_interval": 2,
                               "batch_size": 32, "optimizer": "adam", "lr": 0.01, "seed": 1 + i,
                               "max_price_per_gflop": price}
        if private:
            doc["private"] = True
        docs.append(doc)
    return docs


def _get(url: str, timeout: float = HTTP_TIMEOUT_S) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read(4 * 1024 * 1024))


@dataclass
class MarketWatch:
    """Reads node 0's view of the market while the swarm runs."""

    admin: str
    roles: list[RolesConfig]
    pubkeys: list[str]
    task_ids: list[str] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)

    def poll(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.last = _get(f"{self.admin}/tasks")

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {t["task_id"]: t for t in self.last.get("tasks", []) if t["task_id"] in self.task_ids}

    def workers(self) -> dict[str, dict[str, Any]]:
        return {w["pubkey"]: w for w in self.last.get("workers", [])}

    def registered(self) -> int:
        return len(self.workers())

    def stages(self) -> dict[str, int]:
        out: dict[str, int] = {}
        seen = self.tasks()
        for tid in self.task_ids:
            name = seen[tid]["status"] if tid in seen else "QUEUED"
            out[name] = out.get(name, 0) + 1
        return out

    def done(self) -> bool:
        seen = self.tasks()
        return bool(self.task_ids) and all(seen.get(t, {}).get("status") in TERMINAL for t in self.task_ids)

    def penalties(self) -> list[tuple[int, str, int]]:
        """(node index, why, amount) of every slash and forfeited bond of our tasks."""
        index = {pk: i for i, pk in enumerate(self.pubkeys)}
        return [(index[p["who"]], p["why"], p["amount"]) for t in self.tasks().values()
                for p in t.get("penalties", []) if p["who"] in index]

    def slashed(self) -> list[int]:
        return sorted({i for i, _, _ in self.penalties()})

    def paid(self) -> int:
        return sum(t["paid"] for t in self.tasks().values())

    def headline(self) -> str:
        stages = " ".join(f"{k}:{v}" for k, v in sorted(self.stages().items()))
        return (f"workers {self.registered()}/{sum(r.worker for r in self.roles)} | tasks {stages or '-'} | "
                f"paid {self.paid()} | slashed {len(self.slashed())} | jackpot {self.last.get('jackpot', 0)}")

    def report(self, with_accuracy: bool = True) -> dict[str, Any]:
        index = {pk: i for i, pk in enumerate(self.pubkeys)}
        seen = self.tasks()
        rows = []
        for tid in self.task_ids:
            t = seen.get(tid, {"status": "QUEUED"})
            solver = index.get(t.get("solver") or "")
            cheat = (self.roles[solver].cheat or None) if solver is not None else None
            row = {"task": tid[:16], "status": t["status"], "outcome": t.get("outcome", ""),
                   "solver": solver, "cheat": cheat,
                   "crew": [index.get(m) for m in t.get("crew", ())],
                   "convicted": [index.get(m) for m in t.get("convicted", ())],
                   "proof_valid": t.get("proof_valid"), "paid": t.get("paid", 0),
                   "challenges": t.get("challenges", 0), "accuracy": None,
                   "private": bool(t.get("private")), "key_holders": len(t.get("key_holders", ())),
                   "key_faults": t.get("key_faults", 0)}
            if with_accuracy and t["status"] == "SETTLED" and t.get("proof_valid"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    answer = _get(f"{self.admin}/task/{tid}/result", RESULT_TIMEOUT_S)
                    row["accuracy"] = round(answer["accuracy"], 4)
            rows.append(row)
        cheats = [r for r in rows if r["cheat"] and r["proof_valid"] is not None]
        penalties = self.penalties()
        liars = [i for i, r in enumerate(self.roles) if r.adversary == "false_challenger"]
        return {
            "tasks": rows,
            "settled": sum(r["status"] == "SETTLED" for r in rows),
            "private_tasks": sum(r["private"] for r in rows),
            "refunded": sum(r["status"] == "REFUNDED" for r in rows),
            "paid_to_solvers": sum(r["paid"] for r in rows),
            "slashed_nodes": self.slashed(),
            "slashes": [{"node": i, "role": role_name(self.roles[i]), "why": why, "amount": amount}
                        for i, why, amount in penalties],
            "cheats_placed": len(cheats),
            "cheats_caught": sum(r["proof_valid"] is False for r in cheats),
            "false_challengers": liars,
            "false_challengers_slashed": sorted({i for i, why, _ in penalties if i in liars}),
            "honest_slashed": sorted({i for i, _, _ in penalties if honest(self.roles[i])}),
            "jackpot": self.last.get("jackpot", 0),
        }


def node_pubkeys(dirs: list[DataDir]) -> list[str]:
    from node.daemon.keyfile import load_key_file

    return [load_key_file(d.node_key).public.hex() for d in dirs]


def swarm_crew_file(stages: int, replicas: int) -> bytes:
    """`swarm up --crew`'s task: the smallest crew a devnet takes (64 one-step segments),
    offering the swarm's open price."""
    from netsim.scenarios.market.crew import crew_file

    return crew_file(stages, replicas, seed=1) + f"[market]\nmax_price_per_gflop = {OPEN_PRICE}\n".encode()


def submit_tasks(dd: DataDir, admin: str, docs: list[dict[str, Any]]) -> list[str]:
    from cli.task_cmd import submit_built
    from cli.task_spec import build_task

    return [submit_built(dd, admin, build_task(doc, Path("."))) for doc in docs]


def role_name(role: RolesConfig) -> str:
    if role.cheat:
        return f"cheat:{role.cheat}"
    if role.adversary:
        return role.adversary
    if role.worker:
        return "worker"
    return "whistleblower" if role.whistleblower else "validator"
