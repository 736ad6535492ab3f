"""Fixed loopback ports for local networks and tests, chosen so nothing else takes them.

A local network writes every node's p2p port into the others' bootstrap lists before
any node starts, so the ports are picked, released, and bound again later. Ports from
`bind(port 0)` come from the kernel's ephemeral range, and every other listener that
starts with port 0 in the meantime (our own admin and metrics servers, other tests,
outbound connections) may be handed the very same number: a daemon then finds its p2p
port taken. Picking below the ephemeral range closes that window: the kernel never hands
those ports out by itself, so only another explicit choice can collide.
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

#: Where we pick from when the ephemeral range cannot be read (Linux's default starts at 32768).
FALLBACK_LOW, FALLBACK_HIGH = 20_000, 32_000
#: Never go below this: the low ports belong to well-known services.
FLOOR = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _pick_range() -> tuple[int, int]:
    """[low, high) strictly below the kernel's ephemeral range."""
    try:
        first = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return FALLBACK_LOW, FALLBACK_HIGH
    high = min(first, 65_536)
    low = max(FLOOR, high - 12_000)
    return (low, high) if high - low >= 1_000 else (FALLBACK_LOW, FALLBACK_HIGH)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports below the ephemeral range that nobody listens on now."""
    low, high = _pick_range()
    span = high - low
    start = random.SystemRandom().randrange(span)
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        for step in range(span):
            if len(ports) == n:
                break
            port = low + (start + step) % span
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((host, port))  # no SO_REUSEADDR: fails if anything holds the port
            except OSError:
                continue
            ports.append(port)
    if len(ports) < n:
        raise OSError(f"only {len(ports)} of {n} free ports in {low}..{high - 1}")
    return ports
