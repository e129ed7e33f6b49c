"""What every consumer of the events topic shares: the consume loop, the inbox, the DLQ, the headers.

The loop is poll → process durably → commit offsets, the next batch polled
(and prepared) while the current one is processed. A retriable fault rewinds
to the batch's first offsets and retries it after a backoff (nothing skipped,
nothing committed); a non-retriable one stops the consumer, since processors
send bad records to the DLQ themselves and never raise for them. A poll or commit
that meets a Kafka outage is retried with backoff; a permanent Kafka error stops. The inbox
claims keys in one sorted statement, so two members claiming overlapping keys
after a rebalance lock in one order and cannot deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from broker.domain.faults import Failure, Fault
from broker.infra import kafka
from broker.infra.backoff import Backoff, pause
from broker.ops import metrics
from broker.settings import Settings

log = structlog.get_logger(__name__)

HEADER_TEST_MESSAGE = "test_message"
"""Header marking a TestMessage on the events topic; value "true" (or "1")."""
HEADER_FAULT_CODE = "fault_code"
HEADER_FAULT_DESCRIPTION = "fault_description"
HEADER_CONSUMER = "consumer"


@dataclass(frozen=True)
class LoopOptions:
    """How a consumer reads, batches and retries."""

    group_id: str
    """Kafka consumer group on the events topic."""
    max_records: int = 500
    """Most records per batch (one PostgreSQL transaction)."""
    poll_timeout_ms: int = 500
    """How long one poll waits before checking whether to stop."""
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=30.0))
    """Pause before retrying a batch after a retriable failure."""
    commit_timeout_s: float = 30.0
    """Longest wait for one offset commit; past it the commit is retried as a Kafka outage."""
    fetch_min_bytes: int = 256 * 1024
    """Bytes the broker gathers before it answers a fetch (or ``fetch_max_wait_ms`` passed). At a steady
    rate a batch then holds ~100 ms of events rather than the few that came since the last poll, so
    per-batch costs (PostgreSQL round trips, a commit, a wake of the relay) are shared by many: router +
    relay CPU at 1,000 events/s 0.67–0.69 → 0.40–0.41 ms per event. A backlog never waits."""
    fetch_max_wait_ms: int = 100
    """Longest a fetch waits for ``fetch_min_bytes``: what gathering may add to an event's latency."""
    prepare_in_thread: bool = False
    """Run ``prepare`` in a worker thread, so the loop keeps driving the batch in flight through its
    PostgreSQL round trips meanwhile (lxml parses and validates without the GIL). Worth it where nothing
    else in the process wants the CPU; the router's signing thread does (there it cost 15 % more CPU)."""


Process = Callable[[Sequence[ConsumerRecord]], Awaitable[object]]
Result = TypeVar("Result")
AfterPoll = Callable[[AIOKafkaConsumer], Awaitable[None]]


@dataclass
class _Polled:
    """One polled batch, and what ``prepare`` made of its records (or the fault it raised)."""

    batches: kafka.Batches
    records: list[ConsumerRecord]
    prepared: object = None
    fault: Fault | None = None


async def consume(consumer: AIOKafkaConsumer, process: Process, *, stop: asyncio.Event, name: str,
                  options: LoopOptions, after_poll: AfterPoll | None = None,
                  prepare: Callable[[Sequence[ConsumerRecord]], object] = list) -> None:
    """Run ``process`` on each polled batch until ``stop``; offsets only after it returned.

    While one batch is processed (mostly waiting on PostgreSQL), the next is polled and
    prepared: ``prepare``'s CPU work (parsing, validating) fills that wait, and ``process`` gets what it
    returned (by default the records). Batches are still processed, and their offsets
    committed, strictly one after another; a failed batch rewinds both, and the one polled ahead is
    dropped unprocessed (at stop too), so nothing changes for what is durable or committed.
    """
    failures = 0
    ahead: _Polled | None = None
    working: asyncio.Task | None = None
    try:
        while not stop.is_set():
            current = ahead or await _poll(consumer, stop=stop, name=name, options=options, prepare=prepare,
                                           after_poll=after_poll)
            ahead = None
            if current is None:
                return
            if not current.records:
                continue
            if current.fault is not None:
                working = asyncio.create_task(_raise(current.fault))
            else:
                working = asyncio.create_task(process(current.prepared))
            ahead = await _poll(consumer, stop=stop, name=name, options=options, prepare=prepare,
                                after_poll=after_poll)
            try:
                await working
            except Fault as fault:
                if not fault.retriable:
                    raise
                failures += 1
                delay = options.backoff.delay(failures)
                log.warning(f"{name}.batch_retry", code=fault.code, reason=fault.description,
                            records=len(current.records), retry_in_s=round(delay, 2))
                if ahead is not None:
                    kafka.rewind(consumer, ahead.batches)
                    ahead = None
                kafka.rewind(consumer, current.batches)  # last: its offsets come first where both hold a partition
                await pause(stop, delay)
                continue
            finally:
                working = None
            failures = 0
            await _outlast(partial(kafka.commit_processed, consumer, current.batches,
                                   timeout_s=options.commit_timeout_s),
                           stop=stop, name=name, action="commit", backoff=options.backoff)
    finally:
        if working is not None and not working.done():
            working.cancel()


async def _poll(consumer: AIOKafkaConsumer, *, stop: asyncio.Event, name: str, options: LoopOptions,
                prepare: Callable[[Sequence[ConsumerRecord]], object],
                after_poll: AfterPoll | None) -> _Polled | None:
    """The next batch, prepared; None if ``stop`` was set during a Kafka outage."""
    batches = await _outlast(partial(consumer.getmany, timeout_ms=options.poll_timeout_ms,
                                     max_records=options.max_records),
                             stop=stop, name=name, action="poll", backoff=options.backoff)
    if batches is None:
        return None
    polled = _Polled(batches, [record for partition in batches.values() for record in partition])
    if polled.records:
        try:
            polled.prepared = (await asyncio.to_thread(prepare, polled.records) if options.prepare_in_thread
                               else prepare(polled.records))
        except Fault as fault:
            polled.fault = fault
    if after_poll is not None:
        await after_poll(consumer)
    return polled


LAG_LOOKUP_S = 0.05
"""Longest wait for the partitions' positions after a poll: a position being reset (the consumer behind
retention) is asked of the broker, and a metric must not hold up the poll loop, its commits or its stop for that."""

_REPORTED: dict[str, set[tuple[str, str]]] = {}
"""Per consumer name, the (topic, partition) series its last report set."""


async def report_lag(consumer: AIOKafkaConsumer, *, name: str) -> None:
    """Set ``ejx_consumer_lag`` of consumer ``name`` for each assigned partition (an ``after_poll``), and drop
    the partitions it no longer has (their new owner reports them; a stale one would be summed forever).

    Best effort: a metric must never stop or stall the consumer (a partition revoked while its position is
    looked up raises IllegalStateError, and the partitions after it, asked from the assignment as it
    was, fail aiokafka's "is assigned" assertion; the next poll reports them again)."""
    assigned = consumer.assignment()
    series = {(tp.topic, str(tp.partition)) for tp in assigned}
    for topic, partition in _REPORTED.get(name, set()) - series:
        metrics.CONSUMER_LAG.remove(name, topic, partition)
    _REPORTED[name] = series
    try:
        async with asyncio.timeout(LAG_LOOKUP_S):
            for tp in assigned:
                try:
                    highwater = consumer.highwater(tp)
                    if highwater is None:
                        continue
                    position = await consumer.position(tp)
                except (KafkaError, AssertionError) as error:
                    log.debug(f"{name}.lag_unknown", topic=tp.topic, partition=tp.partition, error=repr(error))
                    continue
                metrics.CONSUMER_LAG.labels(name, tp.topic, str(tp.partition)).set(max(0, highwater - position))
    except TimeoutError:
        log.debug(f"{name}.lag_unknown", error=f"positions not known within {LAG_LOOKUP_S} s")


async def _raise(fault: Fault) -> None:
    raise fault


async def _outlast(call: Callable[[], Awaitable[Result]], *, stop: asyncio.Event, name: str, action: str,
                   backoff: Backoff) -> Result | None:
    """``call()``'s result, retried with backoff through a Kafka outage; None if ``stop`` is set during one.

    Always tried once, so the batch in flight at stop is still committed; a commit given up on at stop
    is safe: the next owner re-reads from the last commit and the inbox skips what was done. A permanent
    Kafka error (not authorised, topic gone) stops the consumer.
    """
    attempt = 0
    while True:
        try:
            with kafka.outage_as_failure(action):
                result = await call()
        except Failure as failure:
            attempt += 1
            delay = backoff.delay(attempt)
            if stop.is_set():
                return None
            log.warning(f"{name}.kafka_outage", action=action, attempt=attempt, retry_in_s=round(delay, 2),
                        error=failure.description)
            await pause(stop, delay)
            continue
        except KafkaError as error:
            raise RuntimeError(f"Kafka refused the {name} consumer's {action} permanently: {error!r}; "
                               "fix the topic or the consumer's rights, then restart it") from error
        if attempt:
            log.info(f"{name}.kafka_back", action=action, attempts=attempt + 1)
        return result


def events_consumer(settings: Settings, options: LoopOptions, **overrides: object) -> AIOKafkaConsumer:
    """The consumer a consume loop reads the events topic with, batching as ``options`` say (not started)."""
    return kafka.consumer(settings, settings.events_topic, group_id=options.group_id,
                          max_poll_records=options.max_records, fetch_min_bytes=options.fetch_min_bytes,
                          fetch_max_wait_ms=options.fetch_max_wait_ms, **overrides)


def is_test_message(headers: Mapping[str, str]) -> bool:
    """Whether a record's (decoded) headers mark it as a TestMessage."""
    return headers.get(HEADER_TEST_MESSAGE, "").strip().lower() in {"true", "1"}


async def claim_inbox(conn: asyncpg.Connection, consumer: str, claims: Iterable[tuple[str, object]]) -> set[str]:
    """Insert (idempotency_key, event_id) pairs into ``consumer``'s inbox; the keys that were new."""
    ordered = sorted(claims, key=lambda claim: claim[0])
    if not ordered:
        return set()
    rows = await conn.fetch(
        """INSERT INTO inbox (consumer, idempotency_key, event_id)
           SELECT $1, k, e FROM unnest($2::text[], $3::uuid[]) AS t(k, e)
           ON CONFLICT (consumer, idempotency_key) DO NOTHING RETURNING idempotency_key""",
        consumer, [key for key, _ in ordered], [event_id for _, event_id in ordered])
    return {row["idempotency_key"] for row in rows}


async def dead_letter(producer: AIOKafkaProducer, topic: str, rejected: Sequence[tuple[ConsumerRecord, Fault]],
                      *, consumer: str) -> None:
    """Send every rejected record to the DLQ with its fault headers; return once Kafka holds them all."""
    if not rejected:
        return
    try:
        sent = []
        for record, fault in rejected:
            headers = [*(record.headers or ()), *kafka.encode_headers({
                HEADER_FAULT_CODE: fault.code, HEADER_FAULT_DESCRIPTION: fault.description[:1000],
                HEADER_CONSUMER: consumer})]
            sent.append(await producer.send(topic, record.value, key=record.key, headers=headers))
        await asyncio.gather(*sent)
    except KafkaError as error:
        if kafka.is_transient(error):
            raise Failure(f"DLQ {topic} unreachable: {error!r}") from error
        # A refusal (record too large, not authorised, topic gone) would fail the same way forever.
        raise RuntimeError(f"the DLQ {topic} refused a record permanently: {error!r}; "
                           "fix the topic or its limits, then restart the consumer") from error
