"""At a steady trickle the consume loop's batches gather ~``fetch_max_wait_ms`` of events, not one each."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest
from aiokafka import ConsumerRecord

from broker.infra import kafka
from broker.settings import Settings
from consumers.loop import LoopOptions, consume, events_consumer

pytestmark = pytest.mark.kafka

RECORDS = 100
EVERY_S = 0.01


async def _trickle_batches(settings: Settings, options: LoopOptions) -> tuple[list[int], list[float]]:
    """Batch sizes and per-record delays (produce called → processed) of a 100/s trickle."""
    sent_at: dict[bytes, float] = {}
    delays: list[float] = []
    sizes: list[int] = []
    stop = asyncio.Event()

    async def process(records: Sequence[ConsumerRecord]) -> None:
        now = time.monotonic()
        sizes.append(len(records))
        delays.extend(now - sent_at[record.value] for record in records)
        if len(delays) >= RECORDS:
            stop.set()

    consumer = events_consumer(settings, options)
    async with kafka.running(consumer), kafka.running(kafka.producer(settings)) as producer:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)  # joined the group: the trickle starts at a live reader
        looping = asyncio.create_task(consume(consumer, process, stop=stop, name="test", options=options))
        for n in range(RECORDS):
            value = f"{n}".encode()
            sent_at[value] = time.monotonic()  # before the send: the loop may process it before the ack returns
            await producer.send_and_wait(settings.events_topic, value)
            await asyncio.sleep(EVERY_S)
        async with asyncio.timeout(30):
            await looping
    return sizes, delays


async def test_a_steady_trickle_is_read_in_batches_of_a_gathering_window_and_no_record_waits_much_longer(
        kafka_settings: Settings, fresh_topic: str) -> None:
    settings = kafka_settings.model_copy(update={"events_topic": fresh_topic})
    options = LoopOptions(group_id=f"ejx-test-{uuid.uuid4().hex[:8]}", fetch_min_bytes=1024 * 1024,
                          fetch_max_wait_ms=200)
    sizes, delays = await _trickle_batches(settings, options)
    # ~1.3 s of trickle in windows of 200 ms (one fetch per window): a handful of batches, not ~100.
    assert sum(sizes) == RECORDS and len(sizes) <= 20, sizes
    assert max(delays) < 1.0, max(delays)

    plain = f"{fresh_topic}.plain"
    await kafka.ensure_topics(settings, [plain], partitions=3)
    try:
        sizes, _ = await _trickle_batches(settings.model_copy(update={"events_topic": plain}),
                                          replace(options, fetch_min_bytes=1))
    finally:
        await kafka.delete_topics(settings, [plain])
    assert len(sizes) > 40, sizes  # the same trickle without gathering: a batch per poll
