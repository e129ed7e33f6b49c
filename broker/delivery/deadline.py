"""The deadline of one delivery attempt: past it, the attempt is abandoned, not awaited.

A destination may wait on PostgreSQL (the SMEV queue) or Kafka through connections
the relay's watchdog does not hold. A dead socket there would keep its key's chain
past the lease, and the next claim could take the key while the first attempt still
runs: two deliveries of one key at once, order lost. So each attempt runs as its own
task under a deadline shorter than half the lease (a chain renews its lease at
half-time). Past it the attempt is cancelled and left to unwind on its own (asyncpg
ends a connection whose cancellation is never confirmed), the pool's connections are
expired so that no other dead one is handed out again, the stall is counted and
logged, and the row is retried like any retriable failure — never marked delivered.
Should the abandoned attempt still land its copy, the receiver de-duplicates it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import structlog

from broker.domain.faults import Failure
from broker.ops import metrics

log = structlog.get_logger(__name__)
T = TypeVar("T")


class AttemptDeadline:
    """Awaits one delivery attempt (a single envelope or a batch) within ``seconds``; a late one is a
    retriable Failure."""

    def __init__(self, pool: asyncpg.Pool, *, seconds: float) -> None:
        self._pool = pool
        self.seconds = seconds
        self._abandoned: set[asyncio.Task] = set()
        """Cancelled attempts still unwinding; held so they are not garbage-collected mid-way."""

    async def within(self, delivery: Coroutine[Any, Any, T], *, destination: str, message_id: str) -> T:
        started = time.monotonic()
        attempt = asyncio.create_task(delivery, name=f"deliver-{message_id}")
        try:
            done, _ = await asyncio.wait({attempt}, timeout=self.seconds)
        except asyncio.CancelledError:
            attempt.cancel()
            raise
        if done:
            return attempt.result()  # a Fault says what to do next
        attempt.cancel()
        self._abandoned.add(attempt)
        attempt.add_done_callback(self._forget)
        metrics.RELAY_STALLS.inc()
        log.error("relay.stalled", stage="delivery", destination=destination, message_id=message_id,
                  stuck_s=round(time.monotonic() - started, 1), deadline_s=self.seconds)
        await self._pool.expire_connections()
        raise Failure(f"delivery to {destination} did not finish within {self.seconds:g} s")

    def _forget(self, attempt: asyncio.Task) -> None:
        self._abandoned.discard(attempt)
        if not attempt.cancelled():
            attempt.exception()  # retrieved: its outcome no longer matters, the row is retried
