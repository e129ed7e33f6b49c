"""Committing a processed batch when some of its partitions are no longer ours."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import TopicPartition

from broker.infra import kafka
from broker.settings import Settings

pytestmark = pytest.mark.kafka


async def test_commit_processed_commits_what_is_still_assigned_and_survives_a_revoked_partition(
        kafka_settings: Settings, fresh_topic: str) -> None:
    async with kafka.running(kafka.producer(kafka_settings)) as producer:
        for partition in (0, 1):
            for n in range(3):
                await producer.send_and_wait(fresh_topic, f"{partition}-{n}".encode(), partition=partition)
    group = f"ejx-test-{uuid.uuid4().hex[:8]}"
    ours, revoked = TopicPartition(fresh_topic, 0), TopicPartition(fresh_topic, 1)
    consumer = kafka.consumer(kafka_settings, group_id=group)
    async with kafka.running(consumer):
        consumer.assign([ours, revoked])
        await consumer.seek_to_beginning(ours, revoked)
        batches = await consumer.getmany(ours, revoked, timeout_ms=10_000)
        while sum(map(len, batches.values())) < 6:
            for tp, records in (await consumer.getmany(ours, revoked, timeout_ms=10_000)).items():
                batches.setdefault(tp, []).extend(records)
        consumer.assign([ours])  # partition 1 went to another member while the batch was processed

        assert await kafka.commit_processed(consumer, batches) is False
        assert await consumer.committed(ours) == 3

        consumer.seek(ours, 3)
        kafka.rewind(consumer, batches)  # must not raise for the partition that is gone
        assert await consumer.position(ours) == 0
