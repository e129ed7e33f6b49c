"""Against the real broker: the publisher's record batches land where per-record sends would, in order."""

from __future__ import annotations

import uuid

import pytest

from adapters.publisher import EventRecord, KafkaPublisher, PublisherOptions
from broker.infra import kafka
from tests.integration.ingest_support import read_topic

pytestmark = pytest.mark.kafka


async def test_each_key_lands_on_the_partition_a_plain_send_picks_with_its_records_in_order(
        kafka_settings, fresh_topic):
    """40 schools, 6 records each of 3 kB and one of 100 kB in one transaction: several batches fill up
    (64 kB), and the topic must hold every record once, each on the partition aiokafka's own ``send()``
    gives its key, a school's records in the order published."""
    settings = kafka_settings.model_copy(update={"events_topic": fresh_topic})
    records = [EventRecord(f"sch-{n % 40:04d}".encode(), f"{n:06d}".encode() + b"x" * 3000,
                           (("event_id", str(uuid.uuid4()).encode()),)) for n in range(240)]
    records.insert(120, EventRecord(b"sch-0007", b"000120-big" + b"y" * 100_000, ()))  # larger than a batch
    publisher = KafkaPublisher(settings, options=PublisherOptions(producers=1, timeout_s=30))
    try:
        await publisher.publish(records)
    finally:
        await publisher.stop()

    oracle = f"{fresh_topic}.oracle"
    await kafka.ensure_topics(settings, [oracle], partitions=3)
    try:
        async with kafka.running(kafka.producer(settings)) as plain:
            chosen = {key: (await (await plain.send(oracle, value=b"", key=key))).partition
                      for key in {r.key for r in records}}
    finally:
        await kafka.delete_topics(settings, [oracle])

    landed = await read_topic(settings, fresh_topic)
    assert sorted(r.value for r in landed) == sorted(r.value for r in records)
    assert len({r.partition for r in landed}) == 3
    for record in landed:
        assert record.partition == chosen[record.key], record.key
    for key in chosen:
        published = [r.value for r in records if r.key == key]
        assert [r.value for r in landed if r.key == key] == published
