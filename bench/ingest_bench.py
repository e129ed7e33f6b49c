"""Ingest throughput: POST /v1/events (batches of 100) to ``ejx serve --components ingest`` beside raw produce.

    .venv/bin/python -m bench.ingest_bench [--requests 300] [--concurrency 8] [--processes 1] [--json FILE]

Starts ``--processes`` processes of ``ejx serve --components ingest`` on one port
(``EJX_HTTP_REUSE_PORT``: the kernel spreads the connections over them), each as
deployed with its HTTP guard, gate and logs at ``--log-level``, against a scratch
database and scratch topics, registers a vendor and its schools, and POSTs
``--requests`` bodies of 100 distinct events from this process, ``--concurrency``
in flight (the bodies are encoded before the clock starts). The servers' CPU per
event is utime + stime of their processes over the measured window, after a
warm-up. In the same run, the raw baseline: the canonical XML of the same number
of events through transactional idempotent (acks=all) aiokafka producers, one
transaction per 100, the same concurrency — what the API must do at least,
without HTTP, JSON, validation or the ledger — with this process's CPU per
event. The topic must then hold every posted event exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table

from adapters.ingest import Canonicaliser
from bench import targets
from bench.pipeline_bench import SCHOOLS, VENDOR, Processes, Scratch, tree_cpu_s, vendor_batch
from broker.access.registry import Registry, School
from broker.app.cli.moments import MOSCOW
from broker.devtools.latency import percentile
from broker.infra import kafka
from broker.ops import logs
from broker.settings import Settings
from broker.xml.schemas import Schemas

BATCH = 100
WARMUP_REQUESTS = 10
console = Console(width=120)


async def post_all(url: str, token: str, bodies: list[bytes], concurrency: int) -> dict:
    """POST every body, ``concurrency`` in flight; wall time, latencies, failures."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    failures: list[str] = []
    pending = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            for body in pending:
                started = time.perf_counter()
                answer = await client.post("/v1/events", content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 202:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"elapsed_s": elapsed, "latencies": latencies, "failures": failures}


async def raw_produce(settings: Settings, topic: str, values: list[tuple[bytes, bytes]], concurrency: int) -> dict:
    """The same bytes through transactional producers, ``concurrency`` batches of 100 in flight."""
    producers = [kafka.producer(settings, transactional_id=f"ejx-bench-raw-{uuid.uuid4().hex[:8]}-{n}")
                 for n in range(concurrency)]
    await asyncio.gather(*(p.start() for p in producers))
    batches = iter([values[start:start + BATCH] for start in range(0, len(values), BATCH)])

    async def worker(producer: AIOKafkaProducer) -> None:
        for batch in batches:
            await producer.begin_transaction()
            deliveries = [await producer.send(topic, value=value, key=key) for key, value in batch]
            await asyncio.gather(*deliveries)
            await producer.commit_transaction()
    try:
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(p) for p in producers))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await asyncio.gather(*(p.stop() for p in producers))
    return {"events_per_s": len(values) / elapsed, "cpu_ms_per_event": 1000 * cpu / len(values)}


async def events_on(settings: Settings, topic: str) -> tuple[int, int]:
    """(records, distinct idempotency keys) committed on ``topic``."""
    consumer = kafka.consumer(settings, group_id=None)
    records, keys = 0, set()
    async with kafka.running(consumer):
        while not consumer.partitions_for_topic(topic):
            await consumer._client.force_metadata_update()  # a topic of a moment ago
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += len(batch)
                keys.update(dict(r.headers)["idempotency_key"] for r in batch)
    return records, len(keys)


async def bench(requests: int, concurrency: int, port: int, log_level: str, count: int = 1) -> dict:
    scratch = Scratch(Settings())
    await scratch.create()
    settings = scratch.settings
    processes = Processes(scratch)
    run = uuid.uuid4().hex[:8]
    try:
        pool = await asyncpg.create_pool(settings.database_dsn, min_size=1, max_size=2)
        try:
            registry = Registry(pool)
            token = await registry.add_vendor(VENDOR)
            await registry.import_schools([School(s, s, "bench", VENDOR) for s in SCHOOLS])
            vendor = await registry.vendor(VENDOR)
        finally:
            await pool.close()
        servers = [processes.start(f"ingest-{n + 1}", "ingest", ["serve", "--components", "ingest"], port=port,
                                   EJX_HTTP_PORT=str(port), EJX_HTTP_REUSE_PORT="true", EJX_LOG_LEVEL=log_level)
                   for n in range(count)]
        await processes.wait_listening(servers[0], count=count)
        url = f"http://127.0.0.1:{port}"
        warm = await post_all(url, token, [vendor_batch(f"warm-{run}", n * BATCH, BATCH)
                                           for n in range(WARMUP_REQUESTS)], concurrency)
        if warm["failures"]:
            raise RuntimeError(f"warm-up POST failed: {warm['failures'][0]}")
        bodies = [vendor_batch(run, n * BATCH, BATCH) for n in range(requests)]
        cpu = sum(tree_cpu_s(server.process.pid) for server in servers)
        api = await post_all(url, token, bodies, concurrency)
        server_cpu_s = sum(tree_cpu_s(server.process.pid) for server in servers) - cpu
        processes.check()
        processes.stop()
        on_topic, distinct = await events_on(settings, settings.events_topic)

        canonical = Canonicaliser(Schemas.load())
        values = []
        for n in range(requests):
            good, _ = canonical.from_dicts(vendor, enumerate(json.loads(vendor_batch(f"raw-{run}", n * BATCH, BATCH))))
            values.extend((c.event.school_id.encode(), c.xml) for c in good)
        raw = await raw_produce(settings, scratch.raw_topic, values, concurrency)
    finally:
        processes.stop()
        await scratch.remove()

    events = requests * BATCH
    expected = events + WARMUP_REQUESTS * BATCH
    rate = events / api["elapsed_s"]
    return {
        "requests": requests, "batch": BATCH, "concurrency": concurrency, "processes": count, "log_level": log_level,
        "events_per_s": rate, "raw_events_per_s": raw["events_per_s"], "ratio": rate / raw["events_per_s"],
        "cpu_ms_per_event": 1000 * server_cpu_s / events, "raw_cpu_ms_per_event": raw["cpu_ms_per_event"],
        "latency_ms": {"p50": 1000 * percentile(api["latencies"], 0.5),
                       "p99": 1000 * percentile(api["latencies"], 0.99)},
        "failures": len(api["failures"]), "first_failure": api["failures"][0] if api["failures"] else None,
        "on_topic": on_topic, "distinct_on_topic": distinct, "expected_on_topic": expected,
        "targets": targets.as_json(targets.ingest(rate, rate / raw["events_per_s"])),
    }


def report(figures: dict) -> None:
    table = Table(title=f"ingest: {figures['processes']} server process(es), {figures['requests']} requests × "
                        f"{figures['batch']} events, {figures['concurrency']} in flight, "
                        f"server logs at {figures['log_level']} "
                        f"({datetime.now(MOSCOW):%Y-%m-%d %H:%M} Moscow)")
    for column in ("path", "events/s", "CPU per event", "p50 / p99"):
        table.add_column(column, justify="left" if column == "path" else "right")
    latency = figures["latency_ms"]
    table.add_row("POST /v1/events (ejx serve)", f"{figures['events_per_s']:,.0f}",
                  f"{figures['cpu_ms_per_event']:.3f} ms", f"{latency['p50']:.0f} / {latency['p99']:.0f} ms")
    table.add_row("raw aiokafka produce (txn per 100)", f"{figures['raw_events_per_s']:,.0f}",
                  f"{figures['raw_cpu_ms_per_event']:.3f} ms", "")
    console.print(table)
    console.print(f"API / raw = {figures['ratio']:.2f}; on the topic {figures['on_topic']} records, "
                  f"{figures['distinct_on_topic']} distinct keys, expected {figures['expected_on_topic']}")
    console.print(targets.table(targets.Target(**target) for target in figures["targets"]))
    if figures["failures"]:
        console.print(f"[red]{figures['failures']} request(s) failed[/], first: {figures['first_failure']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="Batches of 100 to POST.")
    parser.add_argument("--concurrency", type=int, default=8, help="Requests in flight.")
    parser.add_argument("--port", type=int, default=34081, help="Port the servers listen on.")
    parser.add_argument("--processes", type=int, default=1, help="Ingest servers sharing the port (SO_REUSEPORT).")
    parser.add_argument("--log-level", default="info", help="The server's log level (info logs every request).")
    parser.add_argument("--json", type=Path, help="Write the figures to this file.")
    arguments = parser.parse_args()
    logs.configure("warning")
    figures = asyncio.run(bench(arguments.requests, arguments.concurrency, arguments.port, arguments.log_level,
                                arguments.processes))
    report(figures)
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    exact = figures["on_topic"] == figures["distinct_on_topic"] == figures["expected_on_topic"]
    return 0 if exact and not figures["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
