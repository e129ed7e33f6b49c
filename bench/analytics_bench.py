"""The analytics consumer against raw aiokafka, on the same bytes: ``python -m bench.analytics_bench``.

    .venv/bin/python -m bench.analytics_bench [--events 3000] [--log-level info] [--json FILE]

Produces ``--events`` canonical events of a simulated school week
(:func:`broker.devtools.simulation.simulate`, ``event.to_xml()``, the headers ingest
puts on them, key = school) to a scratch topic, then in the same run:

* raw: a plain aiokafka consumer in a new group reads every record and
  commits the offsets of each poll, applying nothing;
* raw insert: the same records (key, event id, bytes) COPied into a scratch
  table, one transaction per batch of ``max_records`` — the least durable write
  a batch needs;
* analytics: :class:`consumers.analytics.AnalyticsConsumer` in a new group
  applies every record into a scratch database.

Each figure comes with CPU milliseconds per event: this process's (the consumer
runs in it) and, for the analytics run, the PostgreSQL backends' serving the
scratch database (``/proc``, the server is local).

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
import json
import os
import time
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from bench import targets
from bench.pipeline_bench import postgres_cpu, postgres_delta
from broker.devtools.simulation import simulate
from broker.domain.model import Event
from broker.infra import kafka
from broker.infra.migrations import migrate
from broker.infra.postgres import create_pool
from broker.ops import logs
from broker.settings import Settings
from broker.xml.schemas import Schemas
from consumers.analytics import AnalyticsConsumer, AnalyticsOptions, events_consumer

console = Console(width=120)
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


async def raw_baseline(settings: Settings, count: int) -> tuple[float, float]:
    """Seconds and CPU seconds for a plain consumer (the analytics consumer's settings) to read ``count``
    records, committing each poll."""
    consumer = events_consumer(settings, AnalyticsOptions(group_id=f"bench-raw-{uuid.uuid4().hex[:8]}"))

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
        cpu, start = time.process_time(), time.perf_counter()
        return await reading - start, time.process_time() - cpu


async def raw_insert(pool: asyncpg.Pool, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
                     ) -> tuple[float, float]:
    """Seconds and CPU seconds to COPY (key, event id, bytes) of every record, one transaction per batch."""
    batch = AnalyticsOptions().max_records
    rows = [(key.decode(), uuid.UUID(dict(headers)["event_id"].decode()), value) for key, value, headers in records]
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE bench_raw_events (school_id text, event_id uuid PRIMARY KEY, body bytea)")
        cpu, start = time.process_time(), time.perf_counter()
        for at in range(0, len(rows), batch):
            async with conn.transaction():
                await conn.copy_records_to_table("bench_raw_events", records=rows[at:at + batch])
        return time.perf_counter() - start, time.process_time() - cpu


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


async def analytics_run(settings: Settings, pool: asyncpg.Pool, database: str, distinct: int) -> dict[str, float]:
    """Seconds, CPU seconds (this process, PostgreSQL) for the consumer to apply ``distinct`` events (the inbox
    holds them all)."""
    group_id = f"bench-analytics-{uuid.uuid4().hex[:8]}"
    options = AnalyticsOptions(group_id=group_id, poll_timeout_ms=200)
    made: list[AIOKafkaConsumer] = []

    def consumer_factory() -> AIOKafkaConsumer:
        made.append(events_consumer(settings, options))
        return made[-1]

    stop = asyncio.Event()
    analytics = AnalyticsConsumer(settings=settings, pool=pool, schemas=Schemas.load(),
                                  consumer_factory=consumer_factory, options=options)
    task = asyncio.create_task(analytics.run(stop))
    watch = await asyncpg.connect(settings.database_dsn)
    try:
        async with asyncio.timeout(WAIT_LIMIT_S):
            while not made:
                await asyncio.sleep(0.01)
            await until_assigned(made[0])
            postgres = await postgres_cpu(watch, database)
            cpu, start = time.process_time(), time.perf_counter()
            while await watch.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'analytics'") < distinct:
                if task.done():
                    task.result()  # the consumer died: show why
                await asyncio.sleep(0.02)
            figures = {"elapsed_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                       "postgres_cpu_s": postgres_delta(postgres, await postgres_cpu(watch, database))}
            while not await committed_to_end(settings, settings.events_topic, group_id):
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
        await watch.close()
    return figures


async def bench(count: int, log_level: str) -> dict:
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
        raw_s, raw_cpu_s = await raw_baseline(settings, len(records))
        pool = await create_pool(settings, max_size=4)
        try:
            applied = await analytics_run(settings, pool, database, distinct)
            counted = await pool.fetchval("SELECT coalesce(sum(events), 0) FROM school_activity")
            insert_s, insert_cpu_s = await raw_insert(pool, records)
        finally:
            await pool.close()
    finally:
        with contextlib.suppress(Exception):
            await kafka.delete_topics(settings, [topic, settings.dlq_topic])
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    if counted != distinct:
        raise SystemExit(f"school_activity counted {counted} events, expected {distinct}")

    n = len(records)
    rate = n / applied["elapsed_s"]
    return {"events": n, "distinct": distinct, "log_level": log_level, "events_per_s": rate,
            "cpu_ms_per_event": 1000 * applied["cpu_s"] / n,
            "postgres_cpu_ms_per_event": 1000 * applied["postgres_cpu_s"] / n,
            "raw_consume_events_per_s": n / raw_s, "raw_consume_cpu_ms_per_event": 1000 * raw_cpu_s / n,
            "raw_insert_events_per_s": n / insert_s, "raw_insert_cpu_ms_per_event": 1000 * insert_cpu_s / n,
            "ratio_consume": rate * raw_s / n, "ratio_insert": rate * insert_s / n,
            "targets": targets.as_json(targets.analytics(rate))}


def report(figures: dict) -> None:
    table = Table(title=f"analytics, {figures['events']} simulated events ({figures['distinct']} distinct), "
                        f"log level {figures['log_level']}")
    for column in ("path", "events/s", "CPU per event", "analytics / this"):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_row("analytics consumer, applied", f"{figures['events_per_s']:,.0f}",
                  f"{figures['cpu_ms_per_event']:.3f} ms + PostgreSQL {figures['postgres_cpu_ms_per_event']:.3f} ms",
                  "")
    table.add_row("raw aiokafka consume + commit", f"{figures['raw_consume_events_per_s']:,.0f}",
                  f"{figures['raw_consume_cpu_ms_per_event']:.3f} ms", f"{figures['ratio_consume']:.3f}")
    table.add_row(f"raw COPY, {AnalyticsOptions().max_records} per transaction",
                  f"{figures['raw_insert_events_per_s']:,.0f}", f"{figures['raw_insert_cpu_ms_per_event']:.3f} ms",
                  f"{figures['ratio_insert']:.3f}")
    console.print(table)
    console.print(targets.table(targets.Target(**target) for target in figures["targets"]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--log-level", default="info", help="Level of the consumer's logs (written to /dev/null).")
    parser.add_argument("--json", type=Path, help="Write the figures to this file.")
    arguments = parser.parse_args()
    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run: the loggers write to it
    with contextlib.redirect_stderr(sink):
        logs.configure(arguments.log_level, json=True)
    figures = asyncio.run(bench(arguments.events, arguments.log_level))
    report(figures)
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
