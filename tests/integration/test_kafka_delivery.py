"""Against the real broker: the guarantees broker.infra.kafka promises the rest of ejx."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from broker.infra import kafka
from broker.settings import Settings

pytestmark = pytest.mark.kafka

# Upper bound on waiting for records that must arrive; a liveness guard, not a timing assertion.
PATIENCE = 30.0


async def take(consumer: AIOKafkaConsumer, count: int) -> list[ConsumerRecord]:
    """Exactly ``count`` records or fewer if they never come; never more."""
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + PATIENCE
    while len(records) < count and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=500, max_records=count - len(records))
        for batch in batches.values():
            records.extend(batch)
    return records


async def drain(consumer: AIOKafkaConsumer, partition: TopicPartition) -> list[ConsumerRecord]:
    """Everything up to the partition's end offset as this consumer's isolation level sees it."""
    end = (await consumer.end_offsets([partition]))[partition]
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + PATIENCE
    while await consumer.position(partition) < end and time.monotonic() < deadline:
        records.extend((await consumer.getmany(partition, timeout_ms=500)).get(partition, []))
    return records


async def test_restarted_group_member_resumes_after_last_committed_offset(
        kafka_settings: Settings, fresh_topic: str) -> None:
    values = [f"grade-{n}".encode() for n in range(10)]
    async with kafka.running(kafka.producer(kafka_settings)) as producer:
        for value in values:
            # One key, so one partition: order is defined.
            await producer.send_and_wait(fresh_topic, value, key=b"school-42",
                                         headers=kafka.encode_headers({"event-type": "GradePosted"}))

    group = f"ejx-test-{uuid.uuid4().hex[:8]}"
    async with kafka.running(kafka.consumer(kafka_settings, fresh_topic, group_id=group)) as first:
        seen = await take(first, len(values))
        assert [record.value for record in seen] == values
        assert kafka.decode_headers(seen[0].headers) == {"event-type": "GradePosted"}
        # Everything was read, but only the first four were processed durably.
        fourth = seen[3]
        await first.commit({TopicPartition(fourth.topic, fourth.partition): fourth.offset + 1})

    async with kafka.running(kafka.consumer(kafka_settings, fresh_topic, group_id=group)) as second:
        rest = await take(second, len(values) - 4)
        assert [record.value for record in rest] == values[4:]
        assert await second.getmany(timeout_ms=1000) == {}


async def test_aborted_transaction_is_invisible_and_committed_one_seen_once(
        kafka_settings: Settings, fresh_topic: str) -> None:
    partition = TopicPartition(fresh_topic, 0)
    transactional = kafka.producer(kafka_settings, transactional_id=f"ejx-test-{uuid.uuid4().hex[:8]}")
    async with kafka.running(transactional) as producer:
        await producer.begin_transaction()
        await producer.send_and_wait(fresh_topic, b"aborted-1", partition=0)
        await producer.send_and_wait(fresh_topic, b"aborted-2", partition=0)
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(fresh_topic, b"committed-1", partition=0)
            await producer.send_and_wait(fresh_topic, b"committed-2", partition=0)

    async def read(**overrides: object) -> list[bytes]:
        reader = kafka.consumer(kafka_settings, group_id=None, **overrides)
        async with kafka.running(reader) as consumer:
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            return [record.value for record in await drain(consumer, partition)]

    # The aborted records really are in the log: only isolation hides them.
    assert await read(isolation_level="read_uncommitted") == [
        b"aborted-1", b"aborted-2", b"committed-1", b"committed-2"]
    assert await read() == [b"committed-1", b"committed-2"]


async def test_offsets_for_times_finds_first_record_at_or_after_timestamp(
        kafka_settings: Settings, fresh_topic: str) -> None:
    partition = TopicPartition(fresh_topic, 1)
    base = int(time.time() * 1000) - 600_000
    async with kafka.running(kafka.producer(kafka_settings)) as producer:
        for n in range(5):
            await producer.send_and_wait(fresh_topic, str(n).encode(), partition=1, timestamp_ms=base + n * 1000)

    async with kafka.running(kafka.consumer(kafka_settings, group_id=None)) as consumer:
        consumer.assign([partition])
        found = await consumer.offsets_for_times({partition: base + 1500})
        assert (found[partition].offset, found[partition].timestamp) == (2, base + 2000)
        exact = await consumer.offsets_for_times({partition: base + 3000})
        assert exact[partition].offset == 3
        assert (await consumer.offsets_for_times({partition: base + 60_000}))[partition] is None

        consumer.seek(partition, found[partition].offset)
        replayed = await asyncio.wait_for(consumer.getone(partition), PATIENCE)
        assert (replayed.value, replayed.timestamp) == (b"2", base + 2000)
