"""The relay: claims due outbox rows, hands each to its destination, records the outcome.

Any number of relays may run: claims are leases taken with ``SKIP LOCKED``, so
two relays never deliver the same row at the same time (a relay that dies
mid-delivery leaves its rows to be claimed again once the lease ends, and the
receiver de-duplicates the repeat by MessageID). A claim holds at most one row
per (destination, partition_key), so the rows of one batch are delivered
concurrently without breaking any key's order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import structlog

from broker import outbox
from broker.backoff import Backoff
from broker.delivery import Destination
from broker.faults import Failure, Fault
from broker.outbox import OutboxMessage

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RelayOptions:
    """How the relay claims, retries and cleans up."""

    batch_size: int = 200
    """Keys (destination, partition_key) claimed per round."""
    per_key: int = 20
    """Rows of one key claimed per round; delivered one after another, in order."""
    concurrency: int = 16
    """Deliveries in flight at once within a round."""
    max_attempts: int = 12
    """After this many failed attempts a row is dead."""
    backoff: Backoff = field(default_factory=Backoff)
    """Delay between attempts of one row."""
    lease_s: float = 60.0
    """How long a claimed row is reserved for its relay; longer than any delivery timeout."""
    idle_poll_s: float = 0.2
    """Sleep when there was nothing due."""
    retention: timedelta = timedelta(days=7)
    """Delivered rows older than this are deleted (the table must not grow forever)."""
    sweep_every_s: float = 300.0
    """How often the retention sweep runs."""


@dataclass
class RoundResult:
    """What one claim-and-deliver round did."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0

    @property
    def claimed(self) -> int:
        return self.delivered + self.retried + self.dead


class Relay:
    """Moves outbox rows to their destinations; ``run`` until ``stop`` is set."""

    def __init__(self, pool: asyncpg.Pool, destinations: Mapping[str, Destination], *,
                 options: RelayOptions = RelayOptions(), rng: random.Random | None = None) -> None:
        self._pool = pool
        self._destinations = dict(destinations)
        self._options = options
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(options.concurrency)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; the round in flight finishes and records its outcome first."""
        log.info("relay.started", destinations=sorted(self._destinations), batch_size=self._options.batch_size)
        next_sweep = time.monotonic()
        failures = 0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_sweep:
                    await outbox.sweep(self._pool, older_than=self._options.retention)
                    next_sweep = time.monotonic() + self._options.sweep_every_s
                result = await self.run_once()
                failures = 0
            except (Failure, *outbox.DATABASE_OUTAGES) as error:
                # The database is what failed (destinations' faults never get here): wait, then try again.
                failures += 1
                delay = self._options.backoff.delay(failures, rng=self._rng)
                log.warning("relay.database_unavailable", error=repr(error), retry_in_s=round(delay, 2))
                await _sleep_unless(stop, delay)
                continue
            if result.claimed == 0:
                await _sleep_unless(stop, self._options.idle_poll_s)
        log.info("relay.stopped")

    async def run_once(self) -> RoundResult:
        """Claim one batch, deliver each key's rows in order (keys in parallel), record every outcome."""
        claimed = await outbox.claim(self._pool, keys=self._options.batch_size, per_key=self._options.per_key,
                                     lease=timedelta(seconds=self._options.lease_s))
        result = RoundResult()
        if not claimed:
            return result
        chains: dict[tuple[str, str], list[OutboxMessage]] = {}
        for message in claimed:
            chains.setdefault((message.destination, message.partition_key), []).append(message)
        outcomes = await asyncio.gather(*(self._deliver_in_order(chain) for chain in chains.values()))
        delivered = [m for chain in outcomes for m in chain[0]]
        await outbox.mark_delivered(self._pool, (m.id for m in delivered))
        result.delivered = len(delivered)
        for message in delivered:
            log.info("outbox.delivered", message_id=str(message.message_id), destination=message.destination,
                     recipient=message.recipient, attempts=message.attempts)
        for _, failed, untried in outcomes:
            if untried:
                await outbox.release(self._pool, untried)
            if failed is None:
                continue
            message, fault = failed
            if not fault.retriable or message.attempts >= self._options.max_attempts:
                await outbox.mark_dead(self._pool, message, error=str(fault))
                result.dead += 1
                log.error("outbox.dead", message_id=str(message.message_id), destination=message.destination,
                          attempts=message.attempts, code=fault.code, error=fault.description)
            else:
                delay = self._options.backoff.delay(message.attempts, rng=self._rng)
                await outbox.mark_retry(self._pool, message, delay=timedelta(seconds=delay), error=str(fault))
                result.retried += 1
                log.warning("outbox.retry", message_id=str(message.message_id), destination=message.destination,
                            attempts=message.attempts, code=fault.code, error=fault.description,
                            retry_in_s=round(delay, 2))
        return result

    async def _deliver_in_order(self, chain: list[OutboxMessage]) -> tuple[
            list[OutboxMessage], tuple[OutboxMessage, Fault] | None, list[OutboxMessage]]:
        """Deliver one key's rows in order until one fails: (delivered, failed with its fault, untried)."""
        for index, message in enumerate(chain):
            fault = await self._attempt(message)
            if fault is not None:
                return chain[:index], (message, fault), chain[index + 1:]
        return chain, None, []

    async def drain(self) -> int:
        """Rounds until nothing is due now; the number delivered. For commands and tests."""
        total = 0
        while (result := await self.run_once()).claimed:
            total += result.delivered
        return total

    async def _attempt(self, message: OutboxMessage) -> Fault | None:
        """None when delivered, else the fault that says what to do next."""
        destination = self._destinations.get(message.destination)
        if destination is None:
            return Failure(f"no destination {message.destination!r} is configured in this relay")
        async with self._slots:
            try:
                await destination.deliver(message)
            except Fault as fault:
                return fault
        return None


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
