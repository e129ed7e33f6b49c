"""The analytics consumer: canonical events → school activity, grade statistics and e-diary projections.

Its own consumer group on the events topic. Each event is applied in one
PostgreSQL transaction together with its inbox row (consumer "analytics"),
so a replay — a redelivery or a new group reading from offset 0 — changes
nothing; offsets are committed only after those transactions committed.
A TestMessage is logged and skipped: it must never change a projection,
nor claim its key in the inbox. A malformed or unknown event goes to the
DLQ with its fault code, then is committed; a retriable failure (PostgreSQL
down) is retried until it succeeds or the consumer is stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from broker import kafka, metrics, projections
from broker.db import UnitOfWork
from broker.faults import Failure, Fault
from broker.settings import Settings
from broker.validation import Schemas

log = structlog.get_logger(__name__)

CONSUMER = "analytics"
"""Name in the inbox, in metrics and in DLQ headers."""
HEADER_TEST_MESSAGE = "test_message"
"""Header marking a TestMessage on the events topic; value "true" (or "1")."""
HEADER_FAULT_CODE = "fault_code"
HEADER_FAULT_DESCRIPTION = "fault_description"
HEADER_CONSUMER = "consumer"

ConsumerFactory = Callable[[], AIOKafkaConsumer]
ProducerFactory = Callable[[], AIOKafkaProducer]


@dataclass(frozen=True)
class AnalyticsOptions:
    """How the analytics consumer reads and retries."""

    group_id: str = "ejx-analytics"
    """Kafka consumer group; a new one re-reads the topic from the start."""
    max_records: int = 500
    """Most records taken from Kafka per poll."""
    poll_timeout_ms: int = 1000
    """How long one poll waits for records before checking whether to stop."""
    retry_backoff_s: float = 1.0
    """First pause before retrying a retriable failure; doubles up to ``retry_backoff_max_s``."""
    retry_backoff_max_s: float = 30.0
    """Longest pause between retries."""


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    TEST = "test"
    REJECTED = "rejected"


def is_test_message(headers: dict[str, str]) -> bool:
    return headers.get(HEADER_TEST_MESSAGE, "").strip().lower() in {"true", "1"}


class AnalyticsConsumer:
    """Consumes the events topic into the projections; build with explicit dependencies, then ``run``."""

    def __init__(self, *, settings: Settings, pool: asyncpg.Pool, schemas: Schemas,
                 consumer_factory: ConsumerFactory | None = None, producer_factory: ProducerFactory | None = None,
                 options: AnalyticsOptions = AnalyticsOptions()) -> None:
        self._settings = settings
        self._pool = pool
        self._schemas = schemas
        self._options = options
        self._consumer_factory = consumer_factory or (lambda: kafka.consumer(
            settings, settings.events_topic, group_id=options.group_id, max_poll_records=options.max_records))
        self._producer_factory = producer_factory or (lambda: kafka.producer(settings))

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; what was applied but not yet committed is re-read and deduplicated."""
        async with kafka.running(self._consumer_factory()) as consumer, \
                kafka.running(self._producer_factory()) as dlq:
            log.info("analytics.started", group_id=self._options.group_id, topic=self._settings.events_topic)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=self._options.poll_timeout_ms)
                for tp, records in batches.items():
                    done = await self._process(records, dlq, stop)
                    if done is not None:
                        await self._commit(consumer, tp, done.offset + 1)
                    if stop.is_set():
                        break
                await self._report_lag(consumer)
            log.info("analytics.stopped", group_id=self._options.group_id)

    async def _process(self, records: list[ConsumerRecord], dlq: AIOKafkaProducer,
                       stop: asyncio.Event) -> ConsumerRecord | None:
        """Handle records of one partition in order; the last one durably handled (None if none)."""
        done = None
        for record in records:
            if not await self._handle_with_retries(record, dlq, stop):
                break
            done = record
        return done

    async def _handle_with_retries(self, record: ConsumerRecord, dlq: AIOKafkaProducer, stop: asyncio.Event) -> bool:
        """True once the record is durably handled; False if stopped while retrying."""
        pause = self._options.retry_backoff_s
        while True:
            try:
                await self.handle(record, dlq)
                return True
            except Failure as failure:
                log.warning("analytics.retrying", topic=record.topic, partition=record.partition,
                            offset=record.offset, code=failure.code, reason=failure.description, pause_s=pause)
            try:
                await asyncio.wait_for(stop.wait(), pause)
                return False
            except asyncio.TimeoutError:
                pause = min(pause * 2, self._options.retry_backoff_max_s)

    async def handle(self, record: ConsumerRecord, dlq: AIOKafkaProducer | None = None) -> Outcome:
        """Apply one record durably, or reject it to the DLQ; a retriable problem raises Failure."""
        headers = kafka.decode_headers(record.headers or ())
        with structlog.contextvars.bound_contextvars(
                topic=record.topic, partition=record.partition, offset=record.offset,
                event_type=headers.get("event_type"), idempotency_key=headers.get("idempotency_key")):
            if is_test_message(headers):
                metrics.ANALYTICS_EVENTS.labels(headers.get("event_type", "unknown"), Outcome.TEST).inc()
                log.info("analytics.test_message_skipped")
                return Outcome.TEST
            try:
                event = self._schemas.check_event(record.value or b"")
            except Fault as fault:
                if fault.retriable:
                    raise
                await self._reject(record, fault, dlq)
                return Outcome.REJECTED
            with structlog.contextvars.bound_contextvars(
                    event_type=event.type.value, idempotency_key=event.idempotency_key, school_id=event.school_id,
                    event_id=str(event.event_id)):
                outcome = await self._apply(event)
                metrics.ANALYTICS_EVENTS.labels(event.type.value, outcome).inc()
                log.info("analytics.event_" + outcome.value)
                return outcome

    async def _apply(self, event) -> Outcome:  # noqa: ANN001 - a broker.model.Event
        try:
            async with UnitOfWork(self._pool) as uow:
                fresh = await uow.connection.fetchval(
                    """INSERT INTO inbox (consumer, idempotency_key, event_id) VALUES ($1, $2, $3)
                       ON CONFLICT (consumer, idempotency_key) DO NOTHING RETURNING true""",
                    CONSUMER, event.idempotency_key, event.event_id)
                if not fresh:
                    return Outcome.DUPLICATE
                await projections.apply(uow.connection, event)
                await uow.commit()
                return Outcome.APPLIED
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError,
                asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
                asyncio.TimeoutError) as error:
            raise Failure(f"PostgreSQL: {type(error).__name__}: {error}") from error

    async def _reject(self, record: ConsumerRecord, fault: Fault, dlq: AIOKafkaProducer | None) -> None:
        metrics.EVENTS_REJECTED.labels(fault.code).inc()
        metrics.ANALYTICS_EVENTS.labels("unknown", Outcome.REJECTED).inc()
        log.warning("analytics.event_rejected", code=fault.code, reason=fault.description)
        if dlq is None:
            return
        headers = [*(record.headers or ()),
                   *kafka.encode_headers({HEADER_FAULT_CODE: fault.code, HEADER_FAULT_DESCRIPTION: fault.description[:1000],
                                          HEADER_CONSUMER: CONSUMER})]
        try:
            await dlq.send_and_wait(self._settings.dlq_topic, record.value, key=record.key, headers=headers)
        except KafkaError as error:
            raise Failure(f"DLQ {self._settings.dlq_topic} unreachable: {error!r}") from error

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: offset})
        except CommitFailedError as error:
            # The partition moved to another member; it re-reads these records and the inbox drops them.
            log.warning("analytics.commit_lost", topic=tp.topic, partition=tp.partition, offset=offset, reason=str(error))

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            metrics.CONSUMER_LAG.labels(CONSUMER, tp.topic, str(tp.partition)).set(max(0, highwater - position))


async def run(stop: asyncio.Event, *, settings: Settings, pool: asyncpg.Pool, schemas: Schemas | None = None,
              consumer_factory: ConsumerFactory | None = None, options: AnalyticsOptions = AnalyticsOptions()) -> None:
    """Run the analytics consumer until ``stop`` is set (what ``ejx serve --components analytics`` calls)."""
    await AnalyticsConsumer(settings=settings, pool=pool, schemas=schemas or Schemas.load(),
                            consumer_factory=consumer_factory, options=options).run(stop)
