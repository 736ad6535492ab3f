"""A peer that keeps sending pubsub RPCs over the size cap is charged and banned: the
library alone only resets the stream and re-registers the peer at once, so it could
push 2 MiB RPCs at us for ever without being scored."""

from __future__ import annotations

import pytest
import trio

from node.transport import TransportConfig
from node.transport.localswarm import open_swarm, swarm_keys, wait_connected
from protocol.commands import TOPIC_TXS
from protocol.envelope import seal
from protocol.identity import Keypair
from protocol.limits import MAX_MESSAGE_BYTES
from protocol.messages import Ping
from tests.test_transport_abuse import CHAIN, rogue_peer

pytestmark = pytest.mark.timeout(60)


def test_a_peer_sending_oversized_rpcs_is_banned_not_just_reset() -> None:
    async def main() -> None:
        async with open_swarm(swarm_keys(2, "oversize"), TransportConfig(chain_id=CHAIN)) as ts:
            await wait_connected(ts, TOPIC_TXS, 15)
            victim = ts[0]
            async with rogue_peer(victim.listen_addrs[0], b"o" * 32) as (rogue, pubsub):
                pubsub.peer_queues[victim.peer_id].max_message_size = 8 * MAX_MESSAGE_BYTES
                big = seal(Ping(3), Keypair.derive("someone"), CHAIN) + b"\x00" * (2 * MAX_MESSAGE_BYTES)
                with trio.fail_after(20):
                    while rogue.get_id() not in victim.banned_peers():
                        if victim.peer_id in pubsub.peer_queues:
                            await pubsub.publish(TOPIC_TXS, big)
                        await trio.sleep(0.2)
            assert victim.metrics()["messages_in"] == 0
            assert victim.police.app_score(ts[1].peer_id) == 0.0

    trio.run(main)
