"""netsim: a deterministic discrete-event simulator that drives polnet's sans-IO cores.

The API in one screen (docs/netsim.md has the rest)::

    from netsim import SimConfig, Check, run

    def factory(index: int, key: Keypair, disk: Disk) -> Core:
        return MyCore(key, state=disk.items("state"))   # rebuild from disk on restart

    def no_fork(sim: Sim) -> None:
        assert ...                                         # raise when broken

    report = run(SimConfig(seed=7, nodes=16, duration_ms=60_000, liveness_ms=30_000),
                 factory, [Check(no_fork, every=100), Check(progress, final=True)])
    report.trace_hash, report.counters, report.per_node, report.sim_s_per_wall_s
"""

from netsim.blobs import BLOB_KIND, BlobStore
from netsim.checks import Check
from netsim.compute import ComputeRegistry, Executor, flops_to_ms
from netsim.config import LinkOverride, NemesisConfig, NetworkConfig, SimConfig
from netsim.disk import Disk
from netsim.errors import CoreFailure, InvariantViolation, NetsimError, ReproducibleFailure, SimConfigError
from netsim.faults import Clog, Crash, FaultAction, Heal, Isolate, Partition, Pause, Restart, Resume, SetLoss
from netsim.report import Counters, NodeStats, Report
from netsim.sim import CRASHED, DIRECT_TOPIC, PAUSED, UP, Factory, Sim, node_keys, run

__all__ = [
    "BLOB_KIND",
    "CRASHED",
    "DIRECT_TOPIC",
    "PAUSED",
    "UP",
    "BlobStore",
    "Check",
    "Clog",
    "ComputeRegistry",
    "CoreFailure",
    "Counters",
    "Crash",
    "Disk",
    "Executor",
    "Factory",
    "FaultAction",
    "Heal",
    "InvariantViolation",
    "Isolate",
    "LinkOverride",
    "NemesisConfig",
    "NetsimError",
    "NetworkConfig",
    "NodeStats",
    "Partition",
    "Pause",
    "Report",
    "ReproducibleFailure",
    "Restart",
    "Resume",
    "SetLoss",
    "Sim",
    "SimConfig",
    "SimConfigError",
    "flops_to_ms",
    "node_keys",
    "run",
]
