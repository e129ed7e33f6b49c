"""Kafkas of the fault tests' own: free ports in their range, small heaps; these may be killed at will."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from broker.settings import Settings

OWN_PORTS = range(32000, 33000)
"""Where the fault tests' own brokers listen; the suite's shared Kafka is never killed."""
SMALL_HEAP = "-Xms96m -Xmx256m"
"""Three JVMs share two cores with the suite."""


def own_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports in :data:`OWN_PORTS`."""
    for first in range(OWN_PORTS.start, OWN_PORTS.stop - count, count):
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise AssertionError(f"no {count} consecutive free ports in {OWN_PORTS}")


def own_kafka_settings(state_dir: Path, *, brokers: int) -> Settings:
    """A Kafka of ``brokers`` nodes under ``state_dir``: node i on the first free ports + 2i."""
    first = own_ports(2 * brokers)
    return Settings(state_dir=state_dir, kafka_brokers=brokers, kafka_port=first, kafka_controller_port=first + 1,
                    kafka_heap=SMALL_HEAP)
