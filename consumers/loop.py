"""What every consumer of the events topic shares: the consume loop, the inbox, the DLQ, the headers.

The loop is poll → process durably → commit offsets. A retriable fault rewinds
to the batch's first offsets and retries it after a backoff (nothing skipped,
nothing committed); a non-retriable one stops the consumer, since processors
send bad records to the DLQ themselves and never raise for them. The inbox
claims keys in one sorted statement, so two members claiming overlapping keys
after a rebalance lock in one order and cannot deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from broker.domain.faults import Failure, Fault
from broker.infra import kafka
from broker.infra.backoff import Backoff, pause

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


Process = Callable[[Sequence[ConsumerRecord]], Awaitable[object]]
AfterPoll = Callable[[AIOKafkaConsumer], Awaitable[None]]


async def consume(consumer: AIOKafkaConsumer, process: Process, *, stop: asyncio.Event, name: str,
                  options: LoopOptions, after_poll: AfterPoll | None = None) -> None:
    """Run ``process`` on each polled batch until ``stop``; offsets only after it returned."""
    failures = 0
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=options.poll_timeout_ms, max_records=options.max_records)
        records = [record for partition in batches.values() for record in partition]
        if records:
            try:
                await process(records)
            except Fault as fault:
                if not fault.retriable:
                    raise
                failures += 1
                delay = options.backoff.delay(failures)
                log.warning(f"{name}.batch_retry", code=fault.code, reason=fault.description,
                            records=len(records), retry_in_s=round(delay, 2))
                kafka.rewind(consumer, batches)
                await pause(stop, delay)
                continue
            failures = 0
            await kafka.commit_processed(consumer, batches)
        if after_poll is not None:
            await after_poll(consumer)


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
