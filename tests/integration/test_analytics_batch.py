"""A polled batch applied in one transaction gives exactly what one-by-one application gives.

Records go through :meth:`AnalyticsConsumer.process` (what one poll hands
over) and :meth:`AnalyticsConsumer.handle` (a batch of one) on a real
PostgreSQL; every analytics table and the inbox are compared row by row. The
PostgreSQL-outage test runs on the real Kafka: the batch is retried, nothing is
skipped and no offset is committed before the transaction that holds it.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from broker.domain.model import GradeRetracted, MarkScale
from broker.infra import kafka
from broker.infra.backoff import Backoff
from broker.xml.schemas import Schemas
from consumers.analytics import AnalyticsConsumer, AnalyticsOptions, Outcome
from tests.fixtures.analytics.journal import (
    BORIS,
    JOURNAL,
    Delivery,
    _header,
    corrected,
    posted,
    register,
)
from tests.integration.test_analytics_kafka import committed_everything, produce_journal
from tests.integration.test_analytics_projections import (
    assert_expected,
    record,
    snapshot,
)

SCHEMAS = Schemas.load()
TABLES = ("school_activity", "school_activity_daily", "diary_grades", "diary_attendance", "diary_homework",
          "diary_term_grades", "inbox")

# g8: posted «3», retracted (v3), then a correction to «5» (v2) arrives late. The late correction must
# not win, and the retracted row keeps the mark it replaced («3»), as when handled one by one.
G8 = (posted("g8", 1, "2026-03-09T13:00:00", student=BORIS, subject="MATH", lesson="2026-03-09", mark="3"),
      GradeRetracted(**_header("sch-001", "g8", 3, "2026-03-09T13:20:00"), grade_ref="g8", reason="ошибка"),
      corrected("g8", 2, "2026-03-09T13:10:00", "5"))
# h3 at sch-002: a pass-fail posting repeated straight away, then its lower version after the higher one.
H3 = (posted("h3", 2, "2026-03-01T09:20:00", student="st-vera3", subject="PHYS", lesson="2026-03-01", mark="зач",
             scale=MarkScale.PASS_FAIL, school="sch-002", class_unit="7Б"),
      posted("h3", 1, "2026-03-01T09:15:00", student="st-vera3", subject="PHYS", lesson="2026-03-01", mark="незач",
             scale=MarkScale.PASS_FAIL, school="sch-002", class_unit="7Б"))
DELIVERIES: tuple[Delivery, ...] = (*JOURNAL, *map(Delivery, G8), Delivery(H3[0]), Delivery(H3[0]), Delivery(H3[1]))


async def state(pool) -> dict[str, list]:  # noqa: ANN001
    """Every analytics table and the analytics inbox, without the inbox's processing time."""
    found = await snapshot(pool)
    found["inbox"] = [tuple(r) for r in await pool.fetch(
        "SELECT consumer, idempotency_key, event_id FROM inbox ORDER BY 1, 2")]
    return found


async def forget(pool) -> None:  # noqa: ANN001
    await pool.execute(f"TRUNCATE {', '.join(TABLES)}")


async def one_by_one(consumer: AnalyticsConsumer, pool) -> tuple[list[Outcome], dict[str, list]]:  # noqa: ANN001
    outcomes = [await consumer.handle(record(d, offset)) for offset, d in enumerate(DELIVERIES)]
    return outcomes, await state(pool)


async def test_one_poll_with_repeats_and_late_lower_versions_equals_one_by_one(db_settings, db_pool) -> None:  # noqa: ANN001
    await register(db_pool)
    consumer = AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=SCHEMAS)
    expected_outcomes, expected = await one_by_one(consumer, db_pool)
    # the repeated g1 and the second h3 v2 are duplicates; the TestMessage is skipped
    assert expected_outcomes.count(Outcome.DUPLICATE) == 2 and expected_outcomes.count(Outcome.TEST) == 1
    grade = "SELECT version, mark_value, retracted FROM diary_grades WHERE grade_record_id = $1"
    assert tuple(await db_pool.fetchrow(grade, "g8")) == (3, "3", True)  # the late v2 «5» did not win
    assert tuple(await db_pool.fetchrow(grade, "h3")) == (2, "зач", False)
    await forget(db_pool)

    outcomes = await consumer.process([record(d, offset) for offset, d in enumerate(DELIVERIES)])
    assert outcomes == expected_outcomes
    assert await state(db_pool) == expected

    # the same poll again (a redelivery): every key is in the inbox, nothing changes
    again = await consumer.process([record(d, offset) for offset, d in enumerate(DELIVERIES)])
    assert set(again) == {Outcome.DUPLICATE, Outcome.TEST}
    assert await state(db_pool) == expected


async def test_any_split_into_two_polls_equals_one_by_one(db_settings, db_pool) -> None:  # noqa: ANN001
    await register(db_pool)
    consumer = AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=SCHEMAS)
    _, expected = await one_by_one(consumer, db_pool)
    records = [record(d, offset) for offset, d in enumerate(DELIVERIES)]
    for cut in range(1, len(records)):
        await forget(db_pool)
        await consumer.process(records[:cut])
        await consumer.process(records[cut:])
        assert await state(db_pool) == expected, f"split after record {cut}"


async def test_a_batch_of_the_journal_gives_the_hand_computed_projections(db_settings, db_pool) -> None:  # noqa: ANN001
    await register(db_pool)
    consumer = AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=SCHEMAS)
    outcomes = await consumer.process([record(d, offset) for offset, d in enumerate(JOURNAL)])
    assert outcomes.count(Outcome.DUPLICATE) == 1 and outcomes.count(Outcome.TEST) == 1
    assert outcomes.count(Outcome.APPLIED) == len(JOURNAL) - 2
    await assert_expected(db_pool)


class FlakyPool:
    """The consumer's pool while PostgreSQL is down for the first ``outages`` transactions."""

    def __init__(self, pool, outages: int, trail: list[str]) -> None:  # noqa: ANN001
        self._pool, self._outages, self._trail = pool, outages, trail

    async def acquire(self, *, timeout: float | None = None):  # noqa: ANN201
        if self._outages > 0:
            self._outages -= 1
            self._trail.append("outage")
            raise ConnectionRefusedError("PostgreSQL is down (test)")
        self._trail.append("transaction")
        return await self._pool.acquire(timeout=timeout)

    async def release(self, connection) -> None:  # noqa: ANN001
        await self._pool.release(connection)


class RecordingConsumer:
    """The consumer's Kafka consumer, noting each offset commit in ``trail``."""

    def __init__(self, consumer: AIOKafkaConsumer, trail: list[str]) -> None:
        self._consumer, self._trail = consumer, trail

    def __getattr__(self, name: str) -> object:
        return getattr(self._consumer, name)

    async def commit(self, offsets=None) -> None:  # noqa: ANN001
        self._trail.append("offsets")
        await self._consumer.commit(offsets)


async def test_a_postgresql_outage_retries_the_batch_and_commits_offsets_only_after_it(
        db_settings, db_pool, fresh_topic) -> None:  # noqa: ANN001
    settings = db_settings.model_copy(update={"events_topic": fresh_topic})
    await register(db_pool)
    await produce_journal(settings)
    group_id = f"ejx-analytics-{uuid.uuid4().hex[:8]}"
    trail: list[str] = []
    consumer = AnalyticsConsumer(
        settings=settings, pool=FlakyPool(db_pool, 3, trail), schemas=SCHEMAS,
        consumer_factory=lambda: RecordingConsumer(kafka.consumer(settings, fresh_topic, group_id=group_id), trail),
        options=AnalyticsOptions(group_id=group_id, poll_timeout_ms=200, backoff=Backoff(base_s=0.05, cap_s=1.0)))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_address)
    await admin.start()
    try:
        async with kafka.running(kafka.consumer(settings, group_id=None)) as reader, asyncio.timeout(120):
            while not await committed_everything(settings, reader, admin, group_id):
                if task.done():
                    task.result()
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
        stop.set()
        await task

    assert trail[:3] == ["outage"] * 3
    assert trail.index("offsets") > trail.index("transaction")  # nothing committed while PostgreSQL was down
    await assert_expected(db_pool)
    assert await db_pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'analytics'") == len(JOURNAL) - 2
