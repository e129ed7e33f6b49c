"""One chaos run: start the cluster, load it while the fault schedule kills, drain, count, stop.

Faults end with the load, once every target has been killed; every target is running
again before the drain, which waits until each acknowledged event reached each of its
destinations (or the drain timeout). Samples of memory and table sizes are taken at the
start, every minute and at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka import TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from broker.devtools.chaos.cluster import SCHOOLS, VENDOR, Cluster
from broker.devtools.chaos.faults import FaultPlan, FaultSchedule
from broker.devtools.chaos.report import ChaosReport, DestinationFigures, Receipt, destination_figures
from broker.devtools.chaos.resources import Sample, sample
from broker.devtools.chaos.vendor import Acknowledged, LoadPlan, Vendor
from broker.domain.routing import RoutingTable
from broker.infra import kafka
from broker.settings import Settings

WATCH_EVERY_S = 1.0


async def every_target_hit(schedule: FaultSchedule, running: asyncio.Task) -> None:
    """Until each target has been killed once, or the schedule ``running`` ended first (a restart that raised:
    whoever awaits ``running`` gets its error, and no one waits forever)."""
    hit = asyncio.create_task(schedule.every_target_hit.wait())
    try:
        await asyncio.wait({hit, running}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hit.cancel()


@dataclass(frozen=True)
class ChaosOptions:
    """One run's size, faults and patience."""

    load: LoadPlan
    faults: FaultPlan | None
    """None: no kills (a soak)."""
    drain_timeout_s: float = 600.0
    sample_every_s: float = 60.0
    keep_logs: bool = False
    """Keep the run's directory (logs, data) even when it passed."""
    brokers: int = 1
    """Kafka nodes of the run's own cluster."""
    retention_s: float | None = None
    """Every retention of the run's processes, short enough for a soak to see sweeps; None: the settings'."""


class Chaos:
    def __init__(self, base: Settings, options: ChaosOptions, console: Console) -> None:
        self._options = options
        self._console = console
        self._root = Path(tempfile.mkdtemp(prefix="ejx-chaos-"))
        self._cluster = Cluster(base, self._root, brokers=options.brokers, retention_s=options.retention_s)
        self._started = time.monotonic()
        self._samples: list[Sample] = []
        self.report = ChaosReport(options={"events": options.load.events, "rate": options.load.rate,
                                           "targets": list(options.faults.targets) if options.faults else [],
                                           "brokers": options.brokers,
                                           "every_s": options.faults.every_s if options.faults else None,
                                           "seed": options.faults.seed if options.faults else None,
                                           "drain_timeout_s": options.drain_timeout_s,
                                           "retention_s": options.retention_s})

    async def run(self) -> ChaosReport:
        failed = True
        try:
            await self._cluster.start()
            self._console.print(f"[bold]ejx chaos[/]: Kafka {self._cluster.settings.kafka_address}, PostgreSQL "
                                f"port {self._cluster.settings.postgres_port}, logs in {self._cluster.logs}")
            await self._sample()
            sampler = asyncio.create_task(self._sample_every())
            try:
                acknowledged, load_end = await self._load()
                drain_s = await self._drain(acknowledged, load_end)
                await self._collect(acknowledged, drain_s)
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            await self._sample()
            failed = bool(self.report.problems)
        finally:
            self.report.samples = self._samples
            self.report.elapsed_s = round(time.monotonic() - self._started, 1)
            keep = failed or bool(self.report.unexpected_exits) or self._options.keep_logs
            self.report.logs = str(self._root) if keep else None
            await asyncio.to_thread(self._cluster.stop, keep=keep)
        return self.report

    async def _load(self) -> tuple[Acknowledged, float]:
        """The vendor's load while faults run and exited processes are revived; faults end with the load, once
        every target has been killed (a short load waits for that)."""
        settings = self._cluster.settings
        vendor = Vendor(self._cluster.ingest_url, self._cluster.token, schools=SCHOOLS, source_system=VENDOR,
                        routing=RoutingTable.load(settings.routing_file), run_id=uuid.uuid4().hex[:8])
        stop = asyncio.Event()
        schedule = FaultSchedule(self._cluster.targets, self._options.faults) if self._options.faults else None
        background = [asyncio.create_task(self._revive_until(stop))]
        faulting = asyncio.create_task(schedule.run(stop)) if schedule is not None else None
        if faulting is not None:
            background.append(faulting)
        began = time.monotonic()
        try:
            with self._progress() as progress:
                task = progress.add_task("acknowledged (202)", total=self._options.load.events)
                acknowledged = await vendor.send(self._options.load, advance=lambda n: progress.advance(task, n))
            if faulting is not None and not schedule.every_target_hit.is_set():
                self._console.print("load done; the faults go on until every target has been killed once")
                await every_target_hit(schedule, faulting)
        finally:
            stop.set()
            await asyncio.gather(*background)
        self.report.load_s = round(time.monotonic() - began, 1)
        if schedule is not None:
            self.report.kills = dict(schedule.log.kills)
            self.report.faults = schedule.log.faults
        if self._cluster.kafka_broker is not None:
            self.report.kafka_nodes_killed = self._cluster.kafka_broker.victims
        self.report.vendor_retries = dict(acknowledged.retries)
        self.report.vendor_posts = acknowledged.posts
        return acknowledged, time.monotonic()

    async def _revive_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._cluster.revive_exited()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=WATCH_EVERY_S)

    async def _drain(self, acknowledged: Acknowledged, load_end: float) -> dict[str, float | None]:
        """Wait until every destination has every acknowledged event it must get, or the timeout."""
        expected = {name: len(events) for name, events in acknowledged.expected().items()}
        drained: dict[str, float | None] = dict.fromkeys(expected)
        deadline = load_end + self._options.drain_timeout_s
        pool = await asyncpg.create_pool(self._cluster.settings.database_dsn, min_size=1, max_size=2)
        try:
            with self._progress() as progress:
                tasks = {name: progress.add_task(f"received by {name}", total=count)
                         for name, count in expected.items()}
                while time.monotonic() < deadline:
                    self._cluster.revive_exited()
                    counts = await _received_counts(pool)
                    for name, task in tasks.items():
                        progress.update(task, completed=counts.get(name, 0))
                        if drained[name] is None and counts.get(name, 0) >= expected[name]:
                            drained[name] = round(time.monotonic() - load_end, 1)
                    if all(v is not None for v in drained.values()):
                        break
                    await asyncio.sleep(WATCH_EVERY_S)
        finally:
            await pool.close()
        return drained

    async def _collect(self, acknowledged: Acknowledged, drain_s: dict[str, float | None]) -> None:
        settings = self._cluster.settings
        conn = await asyncpg.connect(settings.database_dsn)
        try:
            self.report.destinations = await count_deliveries(conn, acknowledged.expected(), drain_s=drain_s)
        finally:
            await conn.close()
        self.report.dlq_records = await records_on(settings, settings.dlq_topic)
        self.report.unexpected_exits = {name: p.unexpected_exits for name, p in self._cluster.processes.items()
                                        if p.unexpected_exits}

    async def _sample(self) -> None:
        self._samples.append(await sample(self._cluster.settings.database_dsn, self._cluster.pids(),
                                          elapsed_s=time.monotonic() - self._started))

    async def _sample_every(self) -> None:
        """A sample a minute; one the database cannot answer (it is down) is skipped."""
        while True:
            await asyncio.sleep(self._options.sample_every_s)
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                await self._sample()

    def _progress(self) -> Progress:
        return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=self._console)


async def count_deliveries(conn: asyncpg.Connection, expected: dict[str, set[uuid.UUID]], *,
                           drain_s: dict[str, float | None]) -> dict[str, DestinationFigures]:
    """The report's figures from the receivers' records, their refusals and the outbox's dead rows."""
    receipts = [Receipt(**dict(row)) for row in await conn.fetch(
        "SELECT receiver, event_id, message_id, copies FROM receiver_messages")]
    rejects = dict(await conn.fetch("SELECT receiver, count(*) FROM receiver_rejects GROUP BY 1"))
    rows = await conn.fetch("SELECT destination, status, count(*) AS n FROM outbox WHERE status <> 'delivered' "
                            "GROUP BY 1, 2")
    dead = {row["destination"]: row["n"] for row in rows if row["status"] == "dead"}
    pending = {row["destination"]: row["n"] for row in rows if row["status"] == "pending"}
    return destination_figures(expected, receipts, bad_signatures=rejects, dead_rows=dead, pending_rows=pending,
                               drain_s=drain_s)


async def _received_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """Distinct events per receiver (every one the receivers took was acknowledged: the vendor repeats until
    202, and the ledger answers a repeat with the same event ids)."""
    with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
        return dict(await pool.fetch("SELECT receiver, count(DISTINCT event_id) FROM receiver_messages GROUP BY 1"))
    return {}


async def records_on(settings: Settings, topic: str, *, within_s: float = 60.0) -> int:
    """Records on ``topic`` from its start (committed transactions only), read to its end."""
    consumer = kafka.consumer(settings, topic, group_id=None)  # without a group: every partition, from the start
    count, deadline = 0, time.monotonic() + within_s
    async with kafka.running(consumer):
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        pending = {tp: end for tp, end in (await consumer.end_offsets(partitions)).items() if end > 0}
        while pending and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                count += len(records)
            for tp in [tp for tp in pending if tp in consumer.assignment()]:
                if await consumer.position(tp) >= pending[tp]:
                    del pending[tp]
    return count
