"""Ingest throughput: POST /v1/events (batches of 100) beside raw aiokafka produce of the same bytes.

    .venv/bin/python -m bench.ingest_bench [--requests 300] [--concurrency 8]

Uses the configured Kafka and PostgreSQL (Settings), a scratch database and a
scratch topic it removes afterwards. The API is served by uvicorn in this
process; the load generator is another process (so its JSON encoding and HTTP
client do not share our CPU time slices with the server's event loop). The raw
baseline produces the canonical XML of the same number of events with the same
producer settings (idempotent, acks=all) and the same concurrency, one Kafka
transaction per 100 — what the API must do at least, without HTTP, JSON,
validation or the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import uvicorn
from fastapi import FastAPI
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from adapters import examples
from adapters.ingest import Canonicaliser, IngestService
from adapters.ledger import IngestLedger
from adapters.publisher import KafkaPublisher, PublisherOptions
from adapters.rest import ingest_router
from broker.access.registry import Registry, School
from broker.infra import kafka
from broker.infra.migrations import migrate
from broker.infra.postgres import create_pool
from broker.ops import logs
from broker.settings import Settings
from broker.xml.schemas import Schemas

BATCH = 100
SCHOOLS = [f"sch-bench-{n:03d}" for n in range(24)]
VENDOR = "bench-vendor"


def batch_of(run: str, request: int) -> list[dict]:
    """100 distinct grades (unique idempotency keys) spread over the schools."""
    base = examples.EVENTS["GradePosted"]
    return [{**base, "source_system": VENDOR, "source_record_id": f"{run}-{request}-{n}",
             "school_id": SCHOOLS[(request * BATCH + n) % len(SCHOOLS)]} for n in range(BATCH)]


def load_generator(url: str, token: str, run: str, requests: int, concurrency: int,
                   progress: multiprocessing.Queue, results: multiprocessing.Queue) -> None:
    """Another process: POST ``requests`` batches with ``concurrency`` in flight; report latencies."""
    async def main() -> None:
        bodies = [json.dumps(batch_of(run, r)).encode() for r in range(requests)]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        latencies: list[float] = []
        failures: list[str] = []
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            async def worker() -> None:
                while not queue.empty():
                    body = queue.get_nowait()
                    started = time.perf_counter()
                    answer = await client.post("/v1/events", content=body, headers=headers)
                    latencies.append(time.perf_counter() - started)
                    if answer.status_code != 202:
                        failures.append(f"{answer.status_code} {answer.text[:200]}")
                    progress.put(1)
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        results.put({"elapsed": elapsed, "latencies": latencies, "failures": failures})

    asyncio.run(main())


async def raw_produce(settings: Settings, topic: str, values: list[tuple[bytes, bytes]], concurrency: int,
                      on_batch) -> float:  # noqa: ANN001
    """The same bytes through transactional aiokafka producers, ``concurrency`` batches in flight."""
    producers = [kafka.producer(settings, transactional_id=f"ejx-bench-raw-{uuid.uuid4().hex[:8]}-{n}")
                 for n in range(concurrency)]
    await asyncio.gather(*(p.start() for p in producers))
    batches = [values[start:start + BATCH] for start in range(0, len(values), BATCH)]
    queue: asyncio.Queue[list[tuple[bytes, bytes]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker(producer) -> None:  # noqa: ANN001
        while not queue.empty():
            batch = queue.get_nowait()
            await producer.begin_transaction()
            deliveries = [await producer.send(topic, value=value, key=key) for key, value in batch]
            await asyncio.gather(*deliveries)
            await producer.commit_transaction()
            on_batch()
    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(p) for p in producers))
        return time.perf_counter() - started
    finally:
        await asyncio.gather(*(p.stop() for p in producers))


async def scratch_database(settings: Settings) -> tuple[str, str]:
    admin = await asyncpg.connect(settings.database_dsn)
    name = f"ejx_bench_{uuid.uuid4().hex[:10]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = settings.database_dsn.rpartition("/")[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return name, dsn


async def drop_database(settings: Settings, name: str) -> None:
    admin = await asyncpg.connect(settings.database_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def bench(requests: int, concurrency: int, port: int, console: Console) -> None:
    base = Settings()
    run = uuid.uuid4().hex[:8]
    topic = f"ejx.bench.{run}"
    db_name, dsn = await scratch_database(base)
    settings = base.model_copy(update={"database_url": dsn, "events_topic": topic})
    await kafka.ensure_topics(settings, [topic, f"{topic}.raw"])
    pool = await create_pool(settings, max_size=concurrency + 4)
    publisher = KafkaPublisher(settings, options=PublisherOptions(producers=concurrency))
    try:
        registry = Registry(pool)
        token = await registry.add_vendor(VENDOR)
        await registry.import_schools([School(s, s, "bench", VENDOR) for s in SCHOOLS])
        schemas = Schemas.load()
        service = IngestService(registry=registry, ledger=IngestLedger(pool), sink=publisher, schemas=schemas)
        app = FastAPI()
        app.include_router(ingest_router(service))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="off"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)

        context = multiprocessing.get_context("spawn")
        progress_queue, results_queue = context.Queue(), context.Queue()
        generator = context.Process(target=load_generator, args=(
            f"http://127.0.0.1:{port}", token, run, requests, concurrency, progress_queue, results_queue))
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console) as progress:
            api_task = progress.add_task("POST /v1/events", total=requests)
            generator.start()
            done = 0
            while done < requests and (generator.is_alive() or not progress_queue.empty()):
                while not progress_queue.empty():
                    progress_queue.get_nowait()
                    done += 1
                progress.update(api_task, completed=done)
                await asyncio.sleep(0.1)
            progress.update(api_task, completed=requests)
            outcome = await asyncio.to_thread(results_queue.get, True, 600)
            await asyncio.to_thread(generator.join, 30)

            canonical = Canonicaliser(schemas)
            vendor = await registry.vendor(VENDOR)
            values: list[tuple[bytes, bytes]] = []
            for r in range(requests):
                good, _ = canonical.from_dicts(vendor, enumerate(batch_of(f"raw{run}", r)))
                values.extend((c.event.school_id.encode(), c.xml) for c in good)
            raw_task = progress.add_task("raw aiokafka produce", total=requests)
            raw_elapsed = await raw_produce(settings, f"{topic}.raw", values, concurrency,
                                            lambda: progress.advance(raw_task))
        server.should_exit = True
        await serving
    finally:
        await publisher.stop()
        await pool.close()
        await drop_database(base, db_name)

    events = requests * BATCH
    api_rate = events / outcome["elapsed"]
    raw_rate = events / raw_elapsed
    latencies = sorted(outcome["latencies"])
    table = Table(title=f"ingest: {requests} requests × {BATCH} events, {concurrency} in flight "
                        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    for column in ("path", "events/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "path" else "left")
    table.add_row("POST /v1/events", f"{api_rate:,.0f}", f"{1000 * statistics.median(latencies):.1f}",
                  f"{1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]:.1f}")
    table.add_row("raw aiokafka (txn per 100)", f"{raw_rate:,.0f}", "", "")
    console.print(table)
    console.print(f"API / raw = {api_rate / raw_rate:.2f}")
    if outcome["failures"]:
        console.print(f"[red]{len(outcome['failures'])} request(s) failed[/], first: {outcome['failures'][0]}")
    await kafka_cleanup(settings, [topic, f"{topic}.raw"])


async def kafka_cleanup(settings: Settings, topics: list[str]) -> None:
    """Scratch topics are deleted so benches do not pile up on a shared broker."""
    from aiokafka.admin import AIOKafkaAdminClient
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_address)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="batches of 100 to POST")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--port", type=int, default=18081, help="port the API is served on")
    parser.add_argument("--log-level", default="warning",
                        help="structured logs of the server (info logs every event; they go to stderr)")
    options = parser.parse_args()
    logs.configure(options.log_level, json=True)
    asyncio.run(bench(options.requests, options.concurrency, options.port, Console()))


if __name__ == "__main__":
    main()
