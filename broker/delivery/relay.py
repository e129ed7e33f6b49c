"""The relay: claims due outbox rows, hands each to its destination, records the outcome.

Any number of relays may run: claims are leases taken with ``SKIP LOCKED``, so
two relays never deliver the same row at the same time (a relay that dies
mid-delivery leaves its rows to be claimed again once the lease ends, and the
receiver de-duplicates the repeat by MessageID). A claim takes a run of rows
per (destination, partition_key); each key's run is delivered in order, the keys
concurrently (a destination that takes batches gets several keys' runs in one
call: :mod:`broker.delivery.chains`), and the next claim overlaps the deliveries
still in flight. Each destination is claimed for on its own, with its own budget
of keys and deliveries in flight, so a slow or unreachable destination never
holds back another; a relay claims only for the destinations it has. Committed
rows wake the relay (:mod:`broker.delivery.wakeup`); a slow poll finds due
retries and whatever a lost notification missed.

A watchdog guards the loop's database work: every connection the loop uses is
taken through :meth:`Relay._watched`, and a round of database work (or one
connection) that has not finished within ``stall_after_s`` — the lease, by
default — means the relay is stuck on a connection that will never answer (a
server that died without a reset, a frozen one): the watchdog drops those
connections, counts ``ejx_relay_stalls_total`` and logs ``relay.stalled``; the
calls waiting on them fail as an outage and the loop carries on with fresh
connections. Outcomes not yet recorded are lost with them: the leases run out
and the rows are delivered again (receivers de-duplicate).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from broker.delivery import outbox, retention, wakeup
from broker.delivery.chains import ChainOutcome, Delivery, batch_outcomes, chains, deliveries
from broker.delivery.deadline import AttemptDeadline
from broker.delivery.destinations import Destination
from broker.delivery.outbox import OutboxMessage
from broker.delivery.retention import RetentionOptions
from broker.domain.faults import Failure, Fault
from broker.infra.backoff import Backoff, pause
from broker.infra.postgres import is_outage
from broker.ops import metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RelayOptions:
    """How the relay claims, retries and cleans up."""

    batch_size: int = 200
    """Keys (destination, partition_key) claimed per round, per destination."""
    per_key: int = 20
    """Rows of one key claimed per round; delivered one after another, in order."""
    concurrency: int = 16
    """Deliveries in flight at once, per destination."""
    max_attempts: int = 12
    """After this many failed attempts a row is dead."""
    backoff: Backoff = field(default_factory=Backoff)
    """Delay between attempts of one row."""
    lease_s: float = 60.0
    """How long a claimed row is reserved for its relay; longer than any delivery timeout."""
    idle_poll_s: float = 1.0
    """Pause before claiming again when the last claim found fewer keys due than it asked for (a committed
    row wakes the relay sooner: this is the safety net, and the pace of due retries)."""
    listen_check_s: float = 10.0
    """How often the listening connection is checked (a lost one is replaced; meanwhile the relay polls)."""
    record_every_s: float = 0.05
    """Finished deliveries are recorded together, at least this often (and at once when nothing is in flight)."""
    retention: RetentionOptions = RetentionOptions()
    """What the relay's retention sweep deletes, and how often (beside its loop, on its own connections)."""
    stall_after_s: float | None = None
    """The watchdog drops connections stuck this long; default: ``lease_s`` (longer than any call's timeout)."""
    attempt_deadline_s: float | None = None
    """A delivery attempt still running after this is abandoned and retried; default: a third of ``lease_s``
    (below half of it, so a chain renews its lease before any other claim can take its key)."""


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
        self._slots = {name: asyncio.Semaphore(options.concurrency) for name in self._destinations}
        """Per destination: at most ``concurrency`` deliveries in flight."""
        self._deadline = AttemptDeadline(pool, seconds=options.attempt_deadline_s or options.lease_s / 3)
        self._busy: dict[asyncpg.Connection, float] = {}
        """Connections in use by the loop, with the moment each was taken (the watchdog reads it)."""
        self._round_since: float | None = None
        """When the current round of database work began; None between rounds."""
        self._woken = asyncio.Event()
        """Set when a delivery finished or outbox rows committed: the loop has something to do."""
        self._committed = False
        """Outbox rows committed since the last claim (a notification came)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; deliveries in flight finish and have their outcome recorded first.

        Pipelined: the next batch is claimed while the previous one is still being
        delivered (whenever half of the claimed keys are done), and finished chains
        are recorded together, one UPDATE for all the delivered rows among them. A
        key's rows stay leased until recorded, so no claim can take a key whose
        earlier rows are still in flight.
        """
        options = self._options
        log.info("relay.started", destinations=sorted(self._destinations), batch_size=options.batch_size,
                 concurrency=options.concurrency)
        watchdog = asyncio.create_task(self._watchdog(), name="relay-watchdog")
        sweeper = asyncio.create_task(retention.run(self._pool, options.retention, stop), name="relay-retention")
        listener = asyncio.create_task(wakeup.listen(
            self._pool, self._rows_committed, check_every_s=options.listen_check_s, acquire_timeout_s=options.lease_s,
            backoff=options.backoff, rng=self._rng), name="relay-listener")
        try:
            await self._loop(stop)
        finally:
            watchdog.cancel()
            listener.cancel()
            sweeper.cancel()
        log.info("relay.stopped")

    async def _loop(self, stop: asyncio.Event) -> None:
        options = self._options
        next_claim = dict.fromkeys(self._destinations, time.monotonic())
        """Per destination, when to claim for it next."""
        failures = 0
        in_flight: dict[asyncio.Task[list[ChainOutcome]], tuple[str, int]] = {}
        """Deliveries under way, with their destination and how many keys each carries."""
        finished: list[asyncio.Task[list[ChainOutcome]]] = []
        record_by = math.inf
        woken = self._woken

        def delivery_done(task: asyncio.Task[list[ChainOutcome]]) -> None:
            # One callback per delivery: asyncio.wait over hundreds of tasks would re-register on every wake.
            nonlocal record_by
            in_flight.pop(task, None)
            if not finished:
                record_by = time.monotonic() + options.record_every_s
            finished.append(task)
            woken.set()

        while True:
            woken.clear()
            if self._committed:
                self._committed = False
                next_claim = dict.fromkeys(next_claim, time.monotonic())
            self._round_since = self._round_since or time.monotonic()
            try:
                if finished and (not in_flight or stop.is_set() or time.monotonic() >= record_by
                                 or len(finished) >= options.batch_size // 2):
                    recording, finished[:], record_by = list(finished), [], math.inf
                    try:
                        async with self._watched() as db:  # a bug in a chain stops us (task.result())
                            await self._record([chain for task in recording for chain in task.result()], db=db)
                    except BaseException:
                        finished[:0] = recording  # still to be recorded, first thing after the outage
                        record_by = time.monotonic()
                        raise
                if stop.is_set() and not in_flight:
                    break
                for destination in () if stop.is_set() else self._destinations:
                    now = time.monotonic()
                    keys_in_flight = _keys_to(destination, in_flight)
                    if now < next_claim[destination] or keys_in_flight > options.batch_size // 2:
                        continue
                    want = options.batch_size - keys_in_flight
                    async with self._watched() as db:
                        claimed = await outbox.claim(db, destination, keys=want, per_key=options.per_key,
                                                     lease=timedelta(seconds=options.lease_s))
                    claimed_chains = chains(claimed)
                    for delivery in deliveries(claimed_chains, self._max_batch):
                        task = asyncio.create_task(self._deliver(delivery))
                        in_flight[task] = (destination, len(delivery))
                        task.add_done_callback(delivery_done)
                    # Fewer keys than asked for: the backlog is drained, so poll again only after a pause.
                    next_claim[destination] = now if len(claimed_chains) >= want else now + options.idle_poll_s
                failures = 0
                self._round_since = None
            except Exception as error:
                if not isinstance(error, Failure) and not is_outage(error):
                    raise
                # The database is what failed (destinations' faults never get here): wait, then try again.
                failures += 1
                delay = options.backoff.delay(failures, rng=self._rng)
                log.warning("relay.database_unavailable", error=repr(error), retry_in_s=round(delay, 2))
                if stop.is_set() and not in_flight:
                    log.warning("relay.outcomes_unrecorded", chains=len(finished))
                    break  # leases run out and the rows are delivered again (receivers de-duplicate)
                self._round_since = None  # waiting out an outage is no stall: the watchdog must not fire
                await pause(stop, delay)
                continue
            if self._committed:
                continue
            claims = [] if stop.is_set() else [at for destination, at in next_claim.items()
                                               if _keys_to(destination, in_flight) <= options.batch_size // 2]
            wake = min([record_by, *claims])
            timeout = None if wake == math.inf else max(0.0, wake - time.monotonic())
            # A finished delivery or a notification wakes the loop; with nothing in flight, so does stop.
            waits = [asyncio.ensure_future(woken.wait())] + ([] if in_flight else [asyncio.ensure_future(stop.wait())])
            _, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for future in pending:
                future.cancel()

    def _rows_committed(self) -> None:
        self._committed = True
        self._woken.set()

    def _max_batch(self, destination: str) -> int:
        return self._destinations[destination].max_batch  # only configured destinations are claimed

    @asynccontextmanager
    async def _watched(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the pool that the watchdog may drop if it stays stuck."""
        async with self._pool.acquire(timeout=self._options.lease_s) as conn:
            self._busy[conn] = time.monotonic()
            try:
                yield conn
            finally:
                self._busy.pop(conn, None)

    async def _watchdog(self) -> None:
        """Every so often: is a round or a connection older than ``stall_after_s``? Then drop them."""
        stall_after = self._options.stall_after_s or self._options.lease_s
        while True:
            await asyncio.sleep(min(1.0, stall_after / 4))
            started = min([*self._busy.values(), self._round_since or math.inf])
            stuck_s = time.monotonic() - started
            if stuck_s < stall_after:
                continue
            metrics.RELAY_STALLS.inc()
            log.error("relay.stalled", stage="database", stuck_s=round(stuck_s, 1), stall_after_s=stall_after,
                      connections_dropped=len(self._busy))
            for conn in list(self._busy):
                conn.terminate()  # whoever waits on it gets ConnectionDoesNotExistError: an outage
            self._busy.clear()
            await self._pool.expire_connections()
            self._round_since = time.monotonic()

    async def run_once(self) -> RoundResult:
        """Claim one batch per destination, deliver each key's rows in order (keys in parallel), record every
        outcome."""
        claimed = [message for destination in self._destinations for message in await outbox.claim(
            self._pool, destination, keys=self._options.batch_size, per_key=self._options.per_key,
            lease=timedelta(seconds=self._options.lease_s))]
        if not claimed:
            return RoundResult()
        outcomes = await asyncio.gather(*(self._deliver(d) for d in deliveries(chains(claimed), self._max_batch)))
        return await self._record([chain for delivery in outcomes for chain in delivery])

    async def _record(self, outcomes: list[ChainOutcome], *, db: asyncpg.Connection | None = None) -> RoundResult:
        """Write down what happened to finished chains: delivered rows in one statement, then the failures."""
        db = db or self._pool
        result = RoundResult()
        delivered = [m for chain in outcomes for m in chain[0]]
        if delivered:
            await outbox.mark_delivered(db, (m.id for m in delivered))
        result.delivered = len(delivered)
        now = datetime.now(UTC)
        for message in delivered:
            metrics.DELIVERIES.labels(message.destination, "delivered").inc()
            if message.created_at is not None:
                metrics.RELAY_DELIVERY_LATENCY.labels(message.destination).observe(
                    (now - message.created_at).total_seconds())
            log.info("outbox.delivered", message_id=str(message.message_id), destination=message.destination,
                     recipient=message.recipient, attempts=message.attempts)
        untried = [m for _, _, chain_untried in outcomes for m in chain_untried]
        if untried:
            await outbox.release(db, untried)
        for _, failed, _ in outcomes:
            if failed is None:
                continue
            message, fault = failed
            if not fault.retriable or message.attempts >= self._options.max_attempts:
                if not await outbox.mark_dead(db, message, error=str(fault)):
                    continue  # another lease holds the row now: its outcome is that lease's to record
                result.dead += 1
                metrics.DELIVERIES.labels(message.destination, "dead").inc()
                log.error("outbox.dead", message_id=str(message.message_id), destination=message.destination,
                          attempts=message.attempts, code=fault.code, error=fault.description)
            else:
                delay = self._options.backoff.delay(message.attempts, rng=self._rng)
                if not await outbox.mark_retry(db, message, delay=timedelta(seconds=delay), error=str(fault)):
                    continue
                result.retried += 1
                metrics.DELIVERIES.labels(message.destination, "retry").inc()
                log.warning("outbox.retry", message_id=str(message.message_id), destination=message.destination,
                            attempts=message.attempts, code=fault.code, error=fault.description,
                            retry_in_s=round(delay, 2))
        return result

    async def _deliver(self, delivery: Delivery) -> list[ChainOutcome]:
        """One chain in order, or several in one batch: per chain, what happened to it.

        The claim's lease is renewed every half lease while the delivery waits for a slot and sends
        (:meth:`_renew_lease`): a queue of keys behind a slow receiver can outlast the lease, and a
        row whose lease ran out would be claimed again (another attempt counted) and sent twice.
        """
        destination = self._destinations[delivery[0][0].destination]
        rows = [message for chain in delivery for message in chain]
        lease = _Lease({message.id for message in rows})
        renewer = asyncio.create_task(self._renew_lease(lease, rows))
        try:
            if destination.max_batch <= 1:
                return [await self._deliver_in_order(chain, lease) for chain in delivery]
            return await self._deliver_batch(destination, delivery, lease)
        finally:
            renewer.cancel()

    async def _renew_lease(self, lease: _Lease, rows: list[OutboxMessage]) -> None:
        """Every half lease, extend it for ``rows`` (delivered ones stay pending until recorded); rows
        another claim has taken since are no longer ``lease.held``. An outage skips a renewal: the rows
        are still ours until the lease runs out, and receivers de-duplicate a re-claim."""
        interval = self._options.lease_s / 2
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._watched() as db:
                    lease.held &= await outbox.renew(db, rows, lease=timedelta(seconds=self._options.lease_s))
            except Exception as error:
                if not is_outage(error):  # a bug: said once; the delivery goes on without renewals
                    log.exception("relay.lease_renewal_failed")
                    return
                log.warning("relay.lease_not_renewed", error=repr(error))

    async def _deliver_batch(self, destination: Destination, delivery: Delivery, lease: _Lease
                             ) -> list[ChainOutcome]:
        """Several keys' chains in one call; each chain ends at its first failed row (the rest untried).
        A chain whose rows another claim has taken meanwhile is left to that claim."""
        name = delivery[0][0].destination
        async with self._slots[name]:
            kept, lost = [], []
            for chain in delivery:
                (kept if all(lease.holds(message) for message in chain) else lost).append(chain)
            _log_lease_lost(lost)
            messages = [message for chain in kept for message in chain]
            if not messages:
                return []
            try:
                faults: list[Fault | None] = await self._deadline.within(
                    destination.deliver_batch(messages), destination=name,
                    message_id=f"{messages[0].message_id} (+{len(messages) - 1} in its batch)")
            except Fault as fault:
                faults = [fault] * len(messages)
        return batch_outcomes(kept, faults)

    async def _deliver_in_order(self, chain: list[OutboxMessage], lease: _Lease) -> ChainOutcome:
        """Deliver one key's rows in order until one fails: (delivered, failed with its fault, untried).
        A lease that was lost (another claim took the key) ends the chain before the next send."""
        destination = self._destinations[chain[0].destination]  # only ours are claimed
        for index, message in enumerate(chain):
            async with self._slots[message.destination]:
                if not lease.holds(message):
                    _log_lease_lost([chain[index:]])
                    return chain[:index], None, []
                try:
                    await self._deadline.within(destination.deliver(message), destination=message.destination,
                                                message_id=str(message.message_id))
                except Fault as fault:
                    return chain[:index], (message, fault), chain[index + 1:]
        return chain, None, []

    async def drain(self) -> int:
        """Rounds until nothing is due now; the number delivered. For commands and tests."""
        total = 0
        while (result := await self.run_once()).claimed:
            total += result.delivered
        return total


@dataclass
class _Lease:
    """The rows of one claim a delivery still holds (its renewer drops those another claim took)."""

    held: set[int]

    def holds(self, message: OutboxMessage) -> bool:
        return message.id in self.held


def _log_lease_lost(chains: list[list[OutboxMessage]]) -> None:
    for chain in chains:
        log.warning("outbox.lease_lost", message_id=str(chain[0].message_id), destination=chain[0].destination)


def _keys_to(destination: str, in_flight: Mapping[object, tuple[str, int]]) -> int:
    """Keys of ``destination`` in deliveries still under way."""
    return sum(keys for to, keys in in_flight.values() if to == destination)
