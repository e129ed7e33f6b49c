"""The analytics consumer on a real Kafka topic and a real PostgreSQL.

The journal is produced the way ingest produces it (key = school, event
headers, a TestMessage marked in its headers, a vendor's repeat sent twice);
the consumer runs in its own group until its committed offsets reach the end
of the topic. Then a second group re-reads the topic from offset 0: every
projection must stay exactly as it was.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from broker.infra import kafka
from broker.settings import Settings
from broker.xml.schemas import Schemas
from consumers.analytics import AnalyticsConsumer, AnalyticsOptions
from tests.fixtures.analytics.journal import JOURNAL, headers, register
from tests.integration.test_analytics_projections import assert_expected, snapshot

CATCH_UP_LIMIT_S = 120  # a bound on waiting, not an assertion about speed


async def produce_journal(settings: Settings) -> int:
    async with kafka.running(kafka.producer(settings)) as producer:
        for delivery in JOURNAL:
            await producer.send_and_wait(settings.events_topic, delivery.event.to_xml(),
                                         key=delivery.event.school_id.encode(), headers=headers(delivery))
    return len(JOURNAL)


async def committed_everything(settings: Settings, reader: AIOKafkaConsumer, admin: AIOKafkaAdminClient,
                               group_id: str) -> bool:
    """Has ``group_id`` committed the end offset of every partition of the events topic?"""
    [topic] = await admin.describe_topics([settings.events_topic])
    partitions = [TopicPartition(settings.events_topic, p["partition"]) for p in topic["partitions"]]
    ends = await reader.end_offsets(partitions)
    committed = await admin.list_consumer_group_offsets(group_id)
    return all(ends[tp] == 0 or (tp in committed and committed[tp].offset >= ends[tp]) for tp in partitions)


async def consume_all(settings: Settings, pool, group_id: str) -> None:  # noqa: ANN001
    """Run the consumer in ``group_id`` until it committed the whole topic, then stop it."""
    stop = asyncio.Event()
    consumer = AnalyticsConsumer(settings=settings, pool=pool, schemas=Schemas.load(),
                                 options=AnalyticsOptions(group_id=group_id, poll_timeout_ms=200))
    task = asyncio.create_task(consumer.run(stop))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_address)
    await admin.start()
    try:
        async with kafka.running(kafka.consumer(settings, group_id=None)) as reader, \
                asyncio.timeout(CATCH_UP_LIMIT_S):
            while not await committed_everything(settings, reader, admin, group_id):
                if task.done():
                    task.result()  # the consumer died: show why
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
        stop.set()
        await task


async def test_topic_gives_the_hand_computed_projections_and_a_replay_changes_nothing(
        db_settings, db_pool, fresh_topic) -> None:  # noqa: ANN001
    settings = db_settings.model_copy(update={"events_topic": fresh_topic})
    await register(db_pool)
    await produce_journal(settings)

    await consume_all(settings, db_pool, f"ejx-analytics-{uuid.uuid4().hex[:8]}")
    await assert_expected(db_pool)
    # 27 messages: one repeat and one TestMessage are not in the inbox
    assert await db_pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'analytics'") == len(JOURNAL) - 2
    before = await snapshot(db_pool)

    # a new group re-reads the topic from offset 0
    await consume_all(settings, db_pool, f"ejx-analytics-replay-{uuid.uuid4().hex[:8]}")
    assert await snapshot(db_pool) == before
    assert await db_pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'analytics'") == len(JOURNAL) - 2
    await assert_expected(db_pool)


async def test_a_malformed_event_goes_to_the_dlq_and_the_next_one_is_applied(
        db_settings, db_pool, fresh_topic) -> None:  # noqa: ANN001
    dlq_topic = f"{fresh_topic}.dlq"
    await kafka.ensure_topics(db_settings, [dlq_topic], partitions=1)
    settings = db_settings.model_copy(update={"events_topic": fresh_topic, "dlq_topic": dlq_topic})
    await register(db_pool)
    good = JOURNAL[1]  # g7 v1, a GradePosted of sch-001
    async with kafka.running(kafka.producer(settings)) as producer:
        await producer.send_and_wait(fresh_topic, b"<GradePosted xmlns='urn://ejx/events/1'/>", key=b"sch-001",
                                     headers=[("event_type", b"GradePosted")])
        await producer.send_and_wait(fresh_topic, good.event.to_xml(), key=b"sch-001", headers=headers(good))

    await consume_all(settings, db_pool, f"ejx-analytics-{uuid.uuid4().hex[:8]}")
    assert await db_pool.fetchval("SELECT mark_value FROM diary_grades WHERE grade_record_id = 'g7'") == "3"
    async with kafka.running(kafka.consumer(settings, dlq_topic, group_id=None)) as reader, \
            asyncio.timeout(CATCH_UP_LIMIT_S):
        rejected = await reader.getone()
    found = kafka.decode_headers(rejected.headers)
    assert found["fault_code"] == "InvalidContent" and found["consumer"] == "analytics"
    assert found["event_type"] == "GradePosted" and rejected.key == b"sch-001"
