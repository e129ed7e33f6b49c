"""The analytics consumer against raw aiokafka, on the same bytes: ``python -m bench.analytics_bench``.

    .venv/bin/python -m bench.analytics_bench [--events 3000] [--log-level info]

Produces ``--events`` canonical events of a simulated school week
(:func:`broker.devtools.simulation.simulate`, ``event.to_xml()``, the headers ingest
puts on them, key = school) to a scratch topic, then in the same run:

* raw: a plain aiokafka consumer in a new group reads every record and
  commits the offsets of each poll, applying nothing;
* analytics: :class:`consumers.analytics.AnalyticsConsumer` in a new group
  applies every record into a scratch database.

Each clock starts once the group has assigned the partitions (the join is
not part of either figure) and stops when the last record was read (raw) or
when the inbox holds every distinct key (analytics); the analytics run is then
checked: committed offsets at the end of every partition, one count per event
in school_activity. Logs go to /dev/null at ``--log-level`` as JSON, so their
formatting is paid for as in production. Uses the configured Kafka and
PostgreSQL; the scratch database and topic are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from broker.devtools.simulation import simulate
from broker.domain.model import Event
from broker.infra import kafka
from broker.infra.migrations import migrate
from broker.infra.postgres import create_pool
from broker.ops import logs
from broker.settings import Settings
from broker.xml.schemas import Schemas
from consumers.analytics import AnalyticsConsumer, AnalyticsOptions

console = Console()
PARTITIONS = 3
WAIT_LIMIT_S = 600.0


def journal(count: int) -> list[Event]:
    """The first ``count`` events of enough simulated school days, each vendor's journal in order."""
    days = 1
    while True:
        day = simulate(days=days)
        found = [event for events in day.events.values() for event in events]
        if len(found) >= count:
            return found[:count]
        days += 1


def record_of(event: Event) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) as ingest puts the event on the topic."""
    return (event.school_id.encode(), event.to_xml(),
            [("event_type", event.type.value.encode()), ("idempotency_key", event.idempotency_key.encode()),
             ("event_id", str(event.event_id).encode()), ("source_system", event.source_system.encode())])


async def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    async with kafka.running(kafka.producer(settings)) as producer:
        futures = [await producer.send(topic, value, key=key, headers=headers) for key, value, headers in records]
        await asyncio.gather(*futures)


async def until_assigned(consumer: AIOKafkaConsumer) -> None:
    while not consumer.assignment():
        await asyncio.sleep(0.01)


async def raw_baseline(settings: Settings, topic: str, count: int) -> float:
    """Seconds for a plain consumer to read ``count`` records, committing each poll."""
    consumer = kafka.consumer(settings, topic, group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
                              max_poll_records=AnalyticsOptions().max_records)

    async def read_all() -> float:
        seen = 0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=200)
            seen += sum(len(records) for records in batches.values())
            if batches:
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
        return time.perf_counter()

    async with kafka.running(consumer):
        reading = asyncio.create_task(read_all())
        await until_assigned(consumer)
        start = time.perf_counter()
        return await reading - start


async def committed_to_end(settings: Settings, topic: str, group_id: str) -> bool:
    """Has ``group_id`` committed the end offset of every partition (asked without joining the group)?"""
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_address)
    await admin.start()
    try:
        async with kafka.running(kafka.consumer(settings, group_id=None)) as reader:
            ends = await reader.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return all(ends[tp] == 0 or (tp in committed and committed[tp].offset >= ends[tp]) for tp in partitions)


async def analytics_run(settings: Settings, pool: asyncpg.Pool, topic: str, distinct: int) -> float:
    """Seconds for the analytics consumer to apply ``distinct`` events (the inbox holds them all)."""
    group_id = f"bench-analytics-{uuid.uuid4().hex[:8]}"
    options = AnalyticsOptions(group_id=group_id, poll_timeout_ms=200)
    made: list[AIOKafkaConsumer] = []

    def consumer_factory() -> AIOKafkaConsumer:
        made.append(kafka.consumer(settings, topic, group_id=group_id, max_poll_records=options.max_records))
        return made[-1]

    stop = asyncio.Event()
    analytics = AnalyticsConsumer(settings=settings, pool=pool, schemas=Schemas.load(),
                                  consumer_factory=consumer_factory, options=options)
    task = asyncio.create_task(analytics.run(stop))
    try:
        async with asyncio.timeout(WAIT_LIMIT_S):
            while not made:
                await asyncio.sleep(0.01)
            await until_assigned(made[0])
            start = time.perf_counter()
            while await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'analytics'") < distinct:
                if task.done():
                    task.result()  # the consumer died: show why
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - start
            while not await committed_to_end(settings, topic, group_id):
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    return elapsed


async def main(count: int, log_level: str) -> None:
    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run: the loggers write to it
    with contextlib.redirect_stderr(sink):
        logs.configure(log_level, json=True)
    events = journal(count)
    distinct = len({event.idempotency_key for event in events})
    records = [record_of(event) for event in events]
    base = Settings()
    suffix = uuid.uuid4().hex[:10]
    database = f"ejx_bench_{suffix}"
    topic = f"ejx.bench.analytics.{suffix}"
    dsn = base.database_dsn.rpartition("/")[0] + f"/{database}"
    settings = base.model_copy(update={"database_url": dsn, "events_topic": topic,
                                       "dlq_topic": f"ejx.bench.analytics-dlq.{suffix}"})
    admin = await asyncpg.connect(base.database_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        await kafka.ensure_topics(settings, [topic, settings.dlq_topic], partitions=PARTITIONS)
        await produce(settings, topic, records)
        raw_s = await raw_baseline(settings, topic, len(records))
        pool = await create_pool(settings, max_size=4)
        try:
            applied_s = await analytics_run(settings, pool, topic, distinct)
            counted = await pool.fetchval("SELECT coalesce(sum(events), 0) FROM school_activity")
        finally:
            await pool.close()
    finally:
        with contextlib.suppress(Exception):
            await kafka.delete_topics(settings, [topic, settings.dlq_topic])
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    if counted != distinct:
        raise SystemExit(f"school_activity counted {counted} events, expected {distinct}")

    raw_rate, applied_rate = len(records) / raw_s, len(records) / applied_s
    table = Table(title=f"analytics, {len(records)} simulated events ({distinct} distinct), log level {log_level}")
    for column in ("path", "events/s", "elapsed"):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_row("raw aiokafka consume + commit", f"{raw_rate:.0f}", f"{raw_s:.2f} s")
    table.add_row("analytics consumer, applied", f"{applied_rate:.0f}", f"{applied_s:.2f} s")
    console.print(table)
    console.print(f"ratio analytics / raw throughput: {applied_rate / raw_rate:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--log-level", default="info", help="Level of the consumer's logs (written to /dev/null).")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.events, arguments.log_level))
