"""End-to-end pipeline: events produced to Kafka → router → outbox → relay → verifying portal receiver.

    .venv/bin/python -m bench.pipeline_bench [--events 2000]

Reports events/s and per-event latency p50/p99 from the produce call to the
moment the reference portal receiver recorded the envelope (verified
signature, durable row), beside raw aiokafka produce→consume of the same bytes
(idempotent acks=all producer, read_committed consumer) in the same run, and
their ratio. Uses the configured Kafka and PostgreSQL, a scratch database and
scratch topics it removes afterwards. Router and relay share this process and
event loop (signing runs in the router's worker thread); the portal receiver
(`ejx receiver portal`) runs in a process of its own, as the portal would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from rich.table import Table

from broker.delivery.destinations import PortalDestination
from broker.delivery.relay import Relay, RelayOptions
from broker.devtools.migrations import RECEIVER_TABLES
from broker.devtools.receivers import ReceiverLog
from broker.domain.model import GradePosted, Mark, MarkScale
from broker.domain.routing import RoutingTable
from broker.infra import kafka
from broker.infra.migrations import PRODUCTION, migrate
from broker.infra.postgres import create_pool
from broker.ops import logs
from broker.settings import Settings
from broker.xml.schemas import Schemas
from broker.xml.signing import XmlDsigSigner, keys
from consumers.router import Router, RouterOptions

console = Console()


def events(count: int) -> list[tuple[bytes, bytes, uuid.UUID]]:
    """(key, canonical XML, event_id) of ``count`` GradePosted events over 50 schools."""
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        event_id = uuid.uuid4()
        school = f"sch-bench-{i % 50:02d}"
        event = GradePosted(
            event_id=event_id, source_system="bench", source_record_id=f"grade-{i}", version=1, occurred_at=now,
            recorded_at=now, school_id=school, academic_year="2026-2027", actor_id="tc-77b0c3d2", student_id=f"st-{i:06d}x9",
            class_unit="5А", subject_code="MATH", teacher_id="tc-77b0c3d2", lesson_id=f"lesson-{i}",
            lesson_date=now.date(), work_type="Контрольная работа", weight=Decimal("1"),
            mark=Mark(MarkScale.FIVE_POINT, "5"), counts_in_average=True, term_id="2026-2027-q1")
        out.append((school.encode(), event.to_xml(), event_id))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _wait_listening(port: int, process: subprocess.Popen) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def raw_baseline(settings: Settings, topic: str, batch: list[tuple[bytes, bytes, uuid.UUID]]) -> dict:
    """Produce the same bytes and consume them back, nothing else."""
    sent: dict[int, float] = {}
    latencies: list[float] = []
    consumer = kafka.consumer(settings, topic, group_id=f"bench-raw-{uuid.uuid4().hex[:8]}")
    async with kafka.running(kafka.producer(settings)) as producer, kafka.running(consumer):
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        start = time.perf_counter()
        futures = []
        for i, (key, value, _) in enumerate(batch):
            sent[i] = time.perf_counter()
            futures.append(await producer.send(topic, value, key=key, headers=[("i", str(i).encode())]))
        await asyncio.gather(*futures)
        while len(latencies) < len(batch):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                now = time.perf_counter()
                latencies.extend(now - sent[int(dict(r.headers)["i"])] for r in records)
        elapsed = time.perf_counter() - start
    return {"rate": len(batch) / elapsed, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "elapsed": elapsed}


async def pipeline(settings: Settings, pool: asyncpg.Pool, batch: list[tuple[bytes, bytes, uuid.UUID]], *,
                   verbose: bool = False) -> dict:
    key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    certificate = keys.self_signed_certificate(key)
    signer = XmlDsigSigner(key, certificate)
    journal = ReceiverLog(pool, "portal")
    # The portal is another system: its receiver runs in its own process (`ejx receiver portal`).
    trust = Path(tempfile.mkdtemp(prefix="ejx-bench-")) / "trusted.crt"
    trust.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    port = _free_port()
    receiver = subprocess.Popen(
        [str(Path(sys.executable).parent / "ejx"), "receiver", "portal", "--port", str(port)],
        env={**os.environ, "EJX_DATABASE_URL": settings.database_dsn, "EJX_TRUST_FILE": str(trust),
             "EJX_LOG_LEVEL": "warning"}, stdout=subprocess.DEVNULL)
    portal = PortalDestination(f"http://127.0.0.1:{port}/envelopes")
    await _wait_listening(port, receiver)
    stop = asyncio.Event()
    sent: dict[uuid.UUID, float] = {}
    async with kafka.running(kafka.producer(settings)) as producer:
        router = Router(settings, pool=pool, producer=producer, signer=signer, schemas=Schemas.load(),
                        routing=RoutingTable.load(), options=RouterOptions(group_id="bench-router"))
        relay = Relay(pool, {"portal": portal}, options=RelayOptions(idle_poll_s=0.02))
        loops = [asyncio.create_task(router.run(stop)), asyncio.create_task(relay.run(stop))]
        await asyncio.sleep(2)  # group join
        start_wall, start = datetime.now(UTC), time.perf_counter()
        futures = []
        for key_, value, event_id in batch:
            sent[event_id] = time.time()
            futures.append(await producer.send(settings.events_topic, value, key=key_))
        await asyncio.gather(*futures)
        while (received := (await journal.report()).received) < len(batch):
            if verbose:
                routed = await pool.fetchval("SELECT count(*) FROM inbox")
                console.print(f"{time.perf_counter() - start:6.1f} s  routed {routed}  received {received}")
            if any(task.done() for task in loops):
                for task in loops:
                    if task.done():
                        task.result()
            await asyncio.sleep(1.0 if verbose else 0.1)
        elapsed = time.perf_counter() - start
        stop.set()
        await asyncio.gather(*loops)
    await portal.close()
    receiver.send_signal(signal.SIGTERM)
    receiver.wait(timeout=30)
    rows = await pool.fetch("SELECT event_id, first_received_at FROM receiver_messages WHERE receiver = 'portal'")
    latencies = [row["first_received_at"].timestamp() - sent[row["event_id"]] for row in rows]
    report = await journal.report()
    assert report.duplicates == 0 and report.bad_signatures == 0, report
    assert start_wall - timedelta(seconds=5) < min(r["first_received_at"] for r in rows)
    return {"rate": len(batch) / elapsed, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "elapsed": elapsed}


async def main(count: int, *, verbose: bool = False) -> None:
    logs.configure("warning")
    base = Settings()
    suffix = uuid.uuid4().hex[:10]
    database = f"ejx_bench_{suffix}"
    admin = await asyncpg.connect(base.database_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = base.database_dsn.rpartition("/")[0] + f"/{database}"
    settings = base.model_copy(update={
        "database_url": dsn, "events_topic": f"ejx.bench.events.{suffix}", "dlq_topic": f"ejx.bench.dlq.{suffix}",
        "interagency_topic": f"ejx.bench.interagency.{suffix}"})
    raw_topic = f"ejx.bench.raw.{suffix}"
    topics = [settings.events_topic, settings.dlq_topic, settings.interagency_topic, raw_topic]
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn, PRODUCTION, RECEIVER_TABLES)
        await conn.close()
        await kafka.ensure_topics(settings, topics)
        batch = events(count)
        pool = await create_pool(settings, max_size=10)
        try:
            raw = await raw_baseline(settings, raw_topic, batch)
            e2e = await pipeline(settings, pool, batch, verbose=verbose)
        finally:
            await pool.close()
    finally:
        await kafka.delete_topics(settings, topics)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()

    table = Table(title=f"pipeline, {count} GradePosted events (→ EPGU portal)")
    for column in ("path", "events/s", "p50 latency", "p99 latency", "elapsed"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, figures in (("raw aiokafka produce→consume", raw), ("ejx produce→portal recorded", e2e)):
        table.add_row(name, f"{figures['rate']:.0f}", f"{figures['p50'] * 1000:.0f} ms",
                      f"{figures['p99'] * 1000:.0f} ms", f"{figures['elapsed']:.1f} s")
    console.print(table)
    console.print(f"ratio ejx / raw throughput: {e2e['rate'] / raw['rate']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--verbose", action="store_true", help="Print routed / received counts every second.")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.events, verbose=arguments.verbose))
