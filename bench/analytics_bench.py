"""The analytics consumer against raw aiokafka, on the same bytes: ``python -m bench.analytics_bench``.

    .venv/bin/python -m bench.analytics_bench [--events 20000] [--processes 3] [--log-level info] [--json FILE]

Analytics runs as deployed: ``--processes`` processes of ``ejx serve --components
analytics`` in one consumer group on a scratch events topic with the configured
number of partitions (the default, 3, lets each of 3 processes own one). Once the
group is stable, this process produces a backlog of ``--events`` canonical events of a
simulated school week of a region's schools (:func:`broker.devtools.simulation.simulate`,
``event.to_xml()``, the headers ingest puts on them, key = school) in one Kafka
transaction, so the group (reading committed records only) sees all of them at its
commit; the clock runs from that commit until the inbox holds every distinct key. Then,
in the same run:

* raw: a plain aiokafka consumer in a new group reads every record and
  commits the offsets of each poll, applying nothing;
* raw insert: the same records (key, event id, bytes) COPied into a scratch
  table, one transaction per batch of ``max_records``: the least durable write
  a batch needs.

Each figure comes with CPU milliseconds per event (``/proc``): the analytics
processes' together, and the PostgreSQL backends' serving the scratch database; this
process's for the raw paths. The analytics run is then checked: committed offsets past
every partition's last record, one count per event in school_activity. Uses the
configured Kafka and PostgreSQL; the scratch database and topics are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from bench import targets
from bench.pipeline_bench import Processes, Scratch, group_members_on, postgres_cpu, postgres_delta
from broker.devtools.simulation import simulate
from broker.domain.model import Event
from broker.infra import kafka
from broker.infra.postgres import create_pool
from broker.ops import logs
from broker.settings import Settings
from consumers.analytics import AnalyticsOptions, events_consumer

console = Console(width=120)
WAIT_LIMIT_S = 600.0
SCHOOLS = 300
"""Schools of the simulated region: enough that keys spread evenly over the partitions."""


def journal(count: int) -> list[Event]:
    """The first ``count`` events of enough simulated school days, each vendor's journal in order."""
    days = 1
    while True:
        day = simulate(days=days, schools=SCHOOLS, students_per_school=10)
        found = [event for events in day.events.values() for event in events]
        if len(found) >= count:
            return found[:count]
        days += 1


def record_of(event: Event) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) as ingest puts the event on the topic."""
    return (event.school_id.encode(), event.to_xml(),
            [("event_type", event.type.value.encode()), ("idempotency_key", event.idempotency_key.encode()),
             ("event_id", str(event.event_id).encode()), ("source_system", event.source_system.encode())])


async def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
                  ) -> tuple[dict[TopicPartition, int], float]:
    """Produce ``records`` in one Kafka transaction: read-committed consumers (ejx's) see none of them until
    it commits, then the whole backlog at once. Returns the offset after each partition's last record
    (its commit marker takes an offset of its own beyond that) and the ``perf_counter`` of the commit, the
    clock's start (the producer's stop comes after it, while the group already applies the backlog)."""
    async with kafka.running(kafka.producer(settings, transactional_id=f"bench-{uuid.uuid4().hex}")) as producer:
        async with producer.transaction():
            futures = [await producer.send(topic, value, key=key, headers=headers) for key, value, headers in records]
            written = await asyncio.gather(*futures)
        committed = time.perf_counter()
    after: dict[TopicPartition, int] = {}
    for metadata in written:
        tp = TopicPartition(topic, metadata.partition)
        after[tp] = max(after.get(tp, 0), metadata.offset + 1)
    return after, committed


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


async def committed_past(settings: Settings, group_id: str, offsets: dict[TopicPartition, int]) -> bool:
    """Has ``group_id`` committed at least ``offsets`` (asked without joining the group)?"""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_address)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return all(tp in committed and committed[tp].offset >= offset for tp, offset in offsets.items())


async def analytics_run(scratch: Scratch, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]],
                        distinct: int, processes: int, log_level: str) -> dict[str, float]:
    """Seconds and CPU seconds (the analytics processes, PostgreSQL) from the commit of the backlog until the
    inbox holds ``distinct`` keys, with ``processes`` analytics processes in one group."""
    settings = scratch.settings
    group_id = AnalyticsOptions().group_id
    running = Processes(scratch)
    watch = await asyncpg.connect(settings.database_dsn)
    try:
        for n in range(processes):
            running.start(f"analytics-{n + 1}", "analytics", ["serve", "--components", "analytics"],
                          EJX_LOG_LEVEL=log_level)
        async with asyncio.timeout(WAIT_LIMIT_S):
            while await group_members_on(settings, group_id, settings.events_topic) < processes:
                running.check()
                await asyncio.sleep(0.2)
            # CPU from before the backlog: the group applies it from the commit on, the /proc reads take a while.
            cpu, postgres = running.cpu(), await postgres_cpu(watch, scratch.database)
            produced, start = await produce(settings, settings.events_topic, records)
            while await watch.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'analytics'") < distinct:
                running.check()
                await asyncio.sleep(0.02)
            figures = {"elapsed_s": time.perf_counter() - start,
                       "cpu_s": running.cpu()["analytics"] - cpu["analytics"],
                       "postgres_cpu_s": postgres_delta(postgres, await postgres_cpu(watch, scratch.database))}
            while not await committed_past(settings, group_id, produced):
                await asyncio.sleep(0.1)
    finally:
        running.stop()
        await watch.close()
    return figures


async def bench(count: int, processes: int, log_level: str) -> dict:
    events = journal(count)
    distinct = len({event.idempotency_key for event in events})
    records = [record_of(event) for event in events]
    scratch = Scratch(Settings())
    await scratch.create()
    try:
        settings = scratch.settings
        applied = await analytics_run(scratch, records, distinct, processes, log_level)
        raw_s, raw_cpu_s = await raw_baseline(settings, len(records))
        pool = await create_pool(settings, max_size=4)
        try:
            counted = await pool.fetchval("SELECT coalesce(sum(events), 0) FROM school_activity")
            insert_s, insert_cpu_s = await raw_insert(pool, records)
        finally:
            await pool.close()
    finally:
        await scratch.remove()
    if counted != distinct:
        raise SystemExit(f"school_activity counted {counted} events, expected {distinct}")

    n = len(records)
    rate = n / applied["elapsed_s"]
    return {"events": n, "distinct": distinct, "processes": processes, "partitions": settings.topic_partitions,
            "log_level": log_level, "events_per_s": rate,
            "cpu_ms_per_event": 1000 * applied["cpu_s"] / n,
            "postgres_cpu_ms_per_event": 1000 * applied["postgres_cpu_s"] / n,
            "raw_consume_events_per_s": n / raw_s, "raw_consume_cpu_ms_per_event": 1000 * raw_cpu_s / n,
            "raw_insert_events_per_s": n / insert_s, "raw_insert_cpu_ms_per_event": 1000 * insert_cpu_s / n,
            "ratio_consume": rate * raw_s / n, "ratio_insert": rate * insert_s / n,
            "targets": targets.as_json(targets.analytics(rate))}


def report(figures: dict) -> None:
    table = Table(title=f"analytics, {figures['processes']} process(es) on {figures['partitions']} partitions, "
                        f"{figures['events']} simulated events ({figures['distinct']} distinct), "
                        f"log level {figures['log_level']}")
    for column in ("path", "events/s", "CPU per event", "analytics / this"):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_row("analytics, backlog applied", f"{figures['events_per_s']:,.0f}",
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
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=3, help="Analytics processes in the one consumer group.")
    parser.add_argument("--log-level", default="info", help="Level of the analytics processes' logs.")
    parser.add_argument("--json", type=Path, help="Write the figures to this file.")
    arguments = parser.parse_args()
    logs.configure("warning")  # the scratch set-up's migrations and topics are not the figures
    figures = asyncio.run(bench(arguments.events, arguments.processes, arguments.log_level))
    report(figures)
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
