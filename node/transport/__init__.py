"""py-libp2p transport: hosts, gossipsub topics, blob streams, direct messages.

The daemon uses `Transport` (see `node.transport.service`); everything else here is
a part of it that tests and benchmarks can also use on its own.
"""

from node.logs import route_library_logs
from node.transport.blobs import BlobConfig, MemoryBlobStore
from node.transport.dialer import BackoffConfig
from node.transport.direct import DIRECT_TOPIC
from node.transport.gossip import GossipConfig
from node.transport.service import Transport, TransportConfig

# Importing libp2p detached its loggers from ours (see node.logs): attach them again.
route_library_logs()

__all__ = [
    "DIRECT_TOPIC",
    "BackoffConfig",
    "BlobConfig",
    "GossipConfig",
    "MemoryBlobStore",
    "Transport",
    "TransportConfig",
]
