"""End-to-end pipeline, as deployed: router, relay and the portal receiver each a process of its own.

    .venv/bin/python -m bench.pipeline_bench --max --events 5000 [--routers 2] [--rest] [--json FILE]
    .venv/bin/python -m bench.pipeline_bench --rate 300 --seconds 30 [--routers 2] [--rest] [--json FILE]

The relay delivers to the receiver's batch endpoint (``/envelopes/batch``); ``--single``
posts one envelope per request instead, as against a portal without one.

Starts ``ejx serve --components router`` (``--routers N`` of them, one consumer
group), ``ejx serve --components relay``, ``ejx receiver portal`` and, with
``--rest``, ``ejx serve --components ingest`` against a scratch database (next to
the configured one) and scratch topics, with development keys in a temporary
directory; everything is removed afterwards and every process is stopped
(SIGTERM, SIGKILL after a grace) even when the bench fails.

``--max`` offers a backlog of N events at once (throughput); ``--rate R --seconds
S`` offers R events/s for S seconds (latency under a steady load). Latency runs
from the produce call (or the vendor's 202 with ``--rest``) to the receiver's
durable record (``receiver_messages.first_received_at``, matched by event id).
Per component it reports CPU milliseconds per event from ``/proc/<pid>/stat``
(utime + stime of the process tree) over the measured window, after a warm-up, and
the same for the PostgreSQL backends serving the scratch database ("postgres").
The receiver checks the signatures of 1 % of the envelopes (``--verify-share``;
issue 13 allows it: checking all of them takes about a third of the two cores the
bench measures ejx on); every envelope still passes the shape rules and is
recorded.

In the same run, the raw baselines: aiokafka produce→consume of the same bytes
(idempotent acks=all producer, read_committed consumer; the fastest of three
rounds after a warm-up), ``cryptography`` ECDSA-P256 signatures of the same
number of SHA-256 digests, and a batched COPY of the run's own outbox rows into
a copy of the outbox table. The receiver records every MessageID durably: lost
and doubled events are counted (once no outbox row is pending, so a re-send is
seen), and the bench exits 1 if either is non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError
from aiokafka.protocol.group import MemberAssignment
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from rich.console import Console
from rich.table import Table

from adapters import examples
from bench import targets
from broker.access.registry import Registry, School
from broker.app.cli.moments import MOSCOW
from broker.devtools.latency import percentile
from broker.devtools.scratch import create_database, drop_database, dsn_of
from broker.domain.model import GradePosted, Mark, MarkScale
from broker.infra import kafka
from broker.ops import logs
from broker.settings import Settings
from broker.xml.signing.keys import KeyAlgorithm, write_dev_pair
from consumers.router import RouterOptions

console = Console(width=120)
SCHOOLS = [f"sch-bench-{n:02d}" for n in range(50)]
VENDOR = "bench-vendor"
WARMUP = 60
GRACE_S = 15.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RAW_INSERT_BATCH = 100
RAW_KAFKA_ROUNDS = 3


# --- the events ----------------------------------------------------------------------------------------------

def events(count: int, run: str) -> list[tuple[bytes, bytes, uuid.UUID]]:
    """(key, canonical XML, event_id) of ``count`` GradePosted events over 50 schools."""
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        event_id = uuid.uuid4()
        school = SCHOOLS[i % len(SCHOOLS)]
        event = GradePosted(
            event_id=event_id, source_system="bench", source_record_id=f"{run}-grade-{i}", version=1, occurred_at=now,
            recorded_at=now, school_id=school, academic_year="2026-2027", actor_id="tc-77b0c3d2",
            student_id=f"st-{i:06d}x9",
            class_unit="5А", subject_code="MATH", teacher_id="tc-77b0c3d2", lesson_id=f"lesson-{i}",
            lesson_date=now.date(), work_type="Контрольная работа", weight=Decimal("1"),
            mark=Mark(MarkScale.FIVE_POINT, "5"), counts_in_average=True, term_id="2026-2027-q1")
        out.append((school.encode(), event.to_xml(), event_id))
    return out


def vendor_batch(run: str, start: int, count: int) -> bytes:
    """A POST /v1/events body: ``count`` distinct grades (unique idempotency keys) over the schools."""
    base = examples.EVENTS["GradePosted"]
    return json.dumps([{**base, "source_system": VENDOR, "source_record_id": f"{run}-{n}",
                        "school_id": SCHOOLS[n % len(SCHOOLS)]} for n in range(start, start + count)]).encode()


# --- CPU of a process tree -----------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def tree_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` and every live descendant, plus the children it already reaped."""
    tree = _children()
    total, pending, first = 0, [pid], True
    while pending:
        current = pending.pop()
        fields = _stat(current)
        if fields is None:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if first:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
            first = False
        pending.extend(tree.get(current, []))
    return total / CLOCK_TICKS


# --- the scratch world ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Scratch:
    """A database, topics and keys of this run only."""

    base: Settings
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    keys: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ejx-pipeline-bench-")))

    @property
    def database(self) -> str:
        return f"ejx_bench_{self.suffix}"

    @property
    def settings(self) -> Settings:
        return self.base.model_copy(update={
            "database_url": dsn_of(self.base, self.database),
            "events_topic": f"ejx.bench.events.{self.suffix}", "dlq_topic": f"ejx.bench.dlq.{self.suffix}",
            "interagency_topic": f"ejx.bench.interagency.{self.suffix}",
            "key_file": self.keys / "ejx.key", "cert_file": self.keys / "ejx.crt",
            "trust_file": self.keys / "ejx.crt", "smev_key_file": self.keys / "smev" / "ejx.key",
            "smev_cert_file": self.keys / "smev" / "ejx.crt"})

    @property
    def raw_topic(self) -> str:
        return f"ejx.bench.raw.{self.suffix}"

    @property
    def topics(self) -> list[str]:
        s = self.settings
        return [s.events_topic, s.dlq_topic, s.interagency_topic, self.raw_topic]

    async def create(self) -> None:
        write_dev_pair(self.keys)
        write_dev_pair(self.keys / "smev", algorithm=KeyAlgorithm.GOST2012_256)
        await create_database(self.base, self.database)
        await kafka.ensure_topics(self.settings, self.topics)

    async def remove(self) -> None:
        with contextlib.suppress(Exception):
            await kafka.delete_topics(self.settings, self.topics)
        await drop_database(self.base, self.database)
        for path in sorted(self.keys.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        self.keys.rmdir()

    def env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        return {**os.environ, "EJX_KAFKA_BOOTSTRAP": s.kafka_address, "EJX_DATABASE_URL": s.database_dsn,
                "EJX_EVENTS_TOPIC": s.events_topic, "EJX_DLQ_TOPIC": s.dlq_topic,
                "EJX_INTERAGENCY_TOPIC": s.interagency_topic, "EJX_KEY_FILE": str(s.key_file),
                "EJX_CERT_FILE": str(s.cert_file), "EJX_TRUST_FILE": str(s.trust_file),
                "EJX_SMEV_KEY_FILE": str(s.smev_key_file), "EJX_SMEV_CERT_FILE": str(s.smev_cert_file),
                "EJX_STATE_DIR": str(self.keys / "state"), "EJX_LOG_LEVEL": "warning", "EJX_HTTP_HOST": "127.0.0.1",
                **extra}


@dataclass
class Component:
    """One process of the pipeline."""

    name: str
    kind: str
    """Component the CPU is reported under (several routers add up)."""
    process: subprocess.Popen
    log: Path
    port: int | None = None


class Processes:
    """The pipeline's processes; all stopped on exit, whatever happened."""

    def __init__(self, scratch: Scratch) -> None:
        self._scratch = scratch
        self.components: list[Component] = []
        self._ejx = str(Path(sys.executable).with_name("ejx"))

    def start(self, name: str, kind: str, argv: list[str], *, port: int | None = None, **env: str) -> Component:
        log = self._scratch.keys / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([self._ejx, *argv], env=self._scratch.env(**env), stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        component = Component(name, kind, process, log, port)
        self.components.append(component)
        return component

    def check(self) -> None:
        for c in self.components:
            if c.process.poll() is not None:
                tail = c.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{c.name} exited with {c.process.returncode}:\n{tail}")

    async def wait_listening(self, component: Component, deadline_s: float = 60, *, count: int = 1) -> None:
        """Wait until ``count`` sockets listen on the component's port (several servers sharing it with
        SO_REUSEPORT have one each)."""
        until = time.monotonic() + deadline_s
        while listeners(component.port) < count:
            self.check()
            if time.monotonic() > until:
                raise TimeoutError(f"{count} server(s) did not listen on {component.port} within {deadline_s:.0f} s")
            await asyncio.sleep(0.1)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far, by component kind."""
        out: dict[str, float] = {}
        for c in self.components:
            out[c.kind] = out.get(c.kind, 0.0) + tree_cpu_s(c.process.pid)
        return out

    def stop(self) -> None:
        for c in self.components:
            if c.process.poll() is None:
                c.process.send_signal(signal.SIGTERM)
        until = time.monotonic() + GRACE_S
        for c in self.components:
            try:
                c.process.wait(timeout=max(0.1, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.process.kill()
                c.process.wait()


def listeners(port: int) -> int:
    """Sockets listening on ``port`` on this machine (``/proc/net/tcp*``)."""
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                found += fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port  # 0A: LISTEN
    return found


async def group_members_on(settings: Settings, group: str, topic: str) -> int:
    """Members of ``group`` with partitions of ``topic`` assigned, once the group is stable (else 0).

    On a new broker the group's coordinator is not there until the offsets topic is made, at the first
    member's join: no coordinator yet is no member yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_address)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
        return 0
    finally:
        await admin.close()
    members = 0
    for response in described:
        for _error, _group, state, _protocol_type, _protocol, group_members, *_ in response.groups:
            if state != "Stable":
                return 0
            for member in group_members:
                assignment = MemberAssignment.decode(member[-1]) if member[-1] else None
                if assignment and any(t == topic for t, _ in assignment.assignment):
                    members += 1
    return members


# --- raw baselines -------------------------------------------------------------------------------------------

async def raw_kafka(settings: Settings, topic: str, batch: list[tuple[bytes, bytes, uuid.UUID]]) -> dict:
    """Produce the same bytes and consume them back, nothing else (this process's CPU per event).

    After a warm-up round, the fastest of :data:`RAW_KAFKA_ROUNDS` rounds: the baseline is what the bare path
    can do, and one cold or preempted round of a small batch (a fetch or metadata wait dominates it) would
    understate it several times over and flatter the ratio.
    """
    consumer = kafka.consumer(settings, topic, group_id=f"bench-raw-{uuid.uuid4().hex[:8]}")
    async with kafka.running(kafka.producer(settings)) as producer, kafka.running(consumer):
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        await _produce_consume(producer, consumer, topic, batch[:WARMUP])
        best = min([await _produce_consume(producer, consumer, topic, batch) for _ in range(RAW_KAFKA_ROUNDS)])
    elapsed, cpu = best
    return {"events_per_s": len(batch) / elapsed, "cpu_ms_per_event": 1000 * cpu / len(batch)}


async def _produce_consume(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, topic: str,
                           batch: list[tuple[bytes, bytes, uuid.UUID]]) -> tuple[float, float]:
    """One round: the wall and CPU seconds from the first send until every record is read back."""
    received = 0
    cpu, start = time.process_time(), time.perf_counter()
    futures = [await producer.send(topic, value, key=key) for key, value, _ in batch]
    await asyncio.gather(*futures)
    while received < len(batch):
        for records in (await consumer.getmany(timeout_ms=500)).values():
            received += len(records)
    return time.perf_counter() - start, time.process_time() - cpu


def raw_sign(batch: list[tuple[bytes, bytes, uuid.UUID]]) -> dict:
    """ECDSA-P256 signatures of one SHA-256 digest per event (the envelope's one signature)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digests = [hashlib.sha256(value).digest() for _, value, _ in batch]
    algorithm = ec.ECDSA(Prehashed(hashes.SHA256()))
    cpu, start = time.process_time(), time.perf_counter()
    for digest in digests:
        key.sign(digest, algorithm)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"per_s": len(digests) / elapsed, "cpu_ms_per_event": 1000 * cpu / len(digests)}


async def raw_insert(settings: Settings) -> dict:
    """COPY the run's own outbox rows, 100 per transaction, into a copy of the outbox table (indexes too)."""
    conn = await asyncpg.connect(settings.database_dsn)
    try:
        await conn.execute("CREATE TABLE bench_raw_outbox (LIKE outbox INCLUDING DEFAULTS INCLUDING IDENTITY "
                           "INCLUDING CONSTRAINTS INCLUDING INDEXES)")
        columns = ("message_id", "destination", "partition_key", "payload")
        rows = [tuple(r) for r in await conn.fetch(f"SELECT {', '.join(columns)} FROM outbox")]
        cpu, start = time.process_time(), time.perf_counter()
        for at in range(0, len(rows), RAW_INSERT_BATCH):
            async with conn.transaction():
                await conn.copy_records_to_table("bench_raw_outbox", records=rows[at:at + RAW_INSERT_BATCH],
                                                 columns=columns)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        size = await conn.fetchval("SELECT avg(length(payload)) FROM bench_raw_outbox")
    finally:
        await conn.close()
    return {"rows_per_s": len(rows) / elapsed if rows else 0.0, "client_cpu_ms_per_row": 1000 * cpu / max(1, len(rows)),
            "row_bytes": float(size or 0)}


# --- offering the load ---------------------------------------------------------------------------------------

@dataclass
class Offered:
    """When each measured event entered the pipeline (epoch seconds), by event id."""

    at: dict[uuid.UUID, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _pace(rate: float | None, seconds: float | None, total: int, step: int) -> Iterator[tuple[int, float]]:
    """(how many to send now, when) — all at once for a backlog, else ``step`` at a time at ``rate``."""
    if rate is None:
        yield from ((min(step, total - at), 0.0) for at in range(0, total, step))
        return
    interval = step / rate
    for n, at in enumerate(range(0, total, step)):
        yield min(step, total - at), n * interval


async def offer_kafka(settings: Settings, batch: list[tuple[bytes, bytes, uuid.UUID]], rate: float | None) -> Offered:
    offered = Offered()
    step = max(1, int(rate / 100)) if rate else len(batch)
    async with kafka.running(kafka.producer(settings)) as producer:
        start, futures, sent = time.monotonic(), [], 0
        for count, when in _pace(rate, None, len(batch), step):
            if (delay := start + when - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            for key, value, event_id in batch[sent:sent + count]:
                offered.at[event_id] = time.time()
                futures.append(await producer.send(settings.events_topic, value, key=key))
            sent += count
        await asyncio.gather(*futures)
    return offered


async def offer_rest(url: str, token: str, run: str, total: int, rate: float | None, *, batch: int,
                     in_flight: int = 8) -> Offered:
    offered = Offered()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limit = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def post(start: int, count: int) -> None:
            async with limit:
                answer = await client.post("/v1/events", content=vendor_batch(run, start, count), headers=headers)
                accepted = time.time()
            if answer.status_code != 202:
                offered.failures.append(f"{answer.status_code} {answer.text[:200]}")
                return
            for event_id in answer.json()["event_ids"]:
                offered.at[uuid.UUID(event_id)] = accepted

        begin, posts, sent = time.monotonic(), [], 0
        for count, when in _pace(rate, None, total, batch):
            if (delay := begin + when - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            posts.append(asyncio.create_task(post(sent, count)))
            sent += count
        await asyncio.gather(*posts)
    return offered


async def postgres_cpu(conn: asyncpg.Connection, database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving ``database`` but this connection (the server is local)."""
    pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                            database)
    return {row["pid"]: tree_cpu_s(row["pid"]) for row in pids}


def postgres_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """Backends born within the window count whole; those that ended within it are missed."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


async def wait_count(conn: asyncpg.Connection, processes: Processes, query: str, done: Callable[[int], bool], *,
                     stall_s: float, deadline: float) -> int:
    """Poll ``query``'s count until ``done`` holds, or it did not change for ``stall_s``, or the deadline; the
    last count."""
    last, last_change = -1, time.monotonic()
    while True:
        processes.check()
        count = int(await conn.fetchval(query))
        if done(count):
            return count
        if count != last:
            last, last_change = count, time.monotonic()
        if time.monotonic() - last_change > stall_s or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.1)


async def wait_received(conn: asyncpg.Connection, processes: Processes, total: int, *, stall_s: float,
                        deadline: float) -> int:
    """Until ``total`` are recorded, or nothing new arrived for ``stall_s``, or the deadline."""
    return await wait_count(conn, processes, "SELECT count(*) FROM receiver_messages WHERE receiver = 'portal'",
                            lambda got: got >= total, stall_s=stall_s, deadline=deadline)


async def wait_delivered(conn: asyncpg.Connection, processes: Processes, *, stall_s: float, deadline: float) -> int:
    """Until the outbox holds no pending row, or that count did not change for ``stall_s``, or the deadline;
    the rows still pending (the run fails with any: a copy they would send comes after the count).

    Every MessageID recorded is not every delivery done: a row whose answer the relay lost is still pending and
    is sent again after its backoff, a copy the count of doubled events must see before the processes stop."""
    return await wait_count(conn, processes, "SELECT count(*) FROM outbox WHERE status = 'pending'",
                            lambda pending: pending == 0, stall_s=stall_s, deadline=deadline)


# --- the run -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What to offer and how to deploy."""

    events: int
    rate: float | None
    seconds: float | None
    routers: int
    single: bool
    rest: bool
    rest_batch: int
    timeout_s: float
    verify_share: float = 0.01
    """Share of envelopes whose signature the receiver checks."""


async def pipeline(scratch: Scratch, plan: Plan, batch: list[tuple[bytes, bytes, uuid.UUID]]) -> dict:
    settings = scratch.settings
    deadline = time.monotonic() + plan.timeout_s
    processes = Processes(scratch)
    token = ""
    if plan.rest:
        pool = await asyncpg.create_pool(settings.database_dsn, min_size=1, max_size=2)
        try:
            registry = Registry(pool)
            token = await registry.add_vendor(VENDOR)
            await registry.import_schools([School(s, s, "bench", VENDOR) for s in SCHOOLS])
        finally:
            await pool.close()
    conn = await asyncpg.connect(settings.database_dsn)
    try:
        receiver_port = _free_port()
        receiver = processes.start("receiver", "receiver", ["receiver", "portal", "--port", str(receiver_port),
                                                          "--verify-share", str(plan.verify_share)],
                                   port=receiver_port)
        await processes.wait_listening(receiver)
        for n in range(plan.routers):
            processes.start(f"router-{n}", "router", ["serve", "--components", "router"])
        portal = f"http://127.0.0.1:{receiver_port}/envelopes"
        processes.start("relay", "relay", ["serve", "--components", "relay"], EJX_PORTAL_URL=portal,
                        **({} if plan.single else {"EJX_PORTAL_BATCH_URL": f"{portal}/batch"}))
        ingest = None
        if plan.rest:
            port = _free_port()
            ingest = processes.start("ingest", "ingest", ["serve", "--components", "ingest"], port=port,
                                     EJX_HTTP_PORT=str(port))
            await processes.wait_listening(ingest)
        group, until = RouterOptions().group_id, time.monotonic() + 90
        while await group_members_on(settings, group, settings.events_topic) < plan.routers:
            processes.check()
            if time.monotonic() > until:
                raise TimeoutError(f"{plan.routers} router(s) did not join {group} on {settings.events_topic}")
            await asyncio.sleep(0.5)

        run = uuid.uuid4().hex[:8]
        if ingest is not None:  # warm-up: every process has handled events before the CPU is counted
            warm = await offer_rest(f"http://127.0.0.1:{ingest.port}", token, f"warm-{run}", WARMUP, None,
                                    batch=WARMUP)
            if warm.failures:
                raise RuntimeError(f"warm-up POST failed: {warm.failures[0]}")
        else:
            await offer_kafka(settings, events(WARMUP, f"warm-{run}"), None)
        if await wait_received(conn, processes, WARMUP, stall_s=60, deadline=deadline) < WARMUP:
            raise TimeoutError("the warm-up events did not reach the receiver")
        await asyncio.sleep(1.0)

        cpu_before, pg_before, wall = processes.cpu(), await postgres_cpu(conn, scratch.database), time.time()
        if ingest is not None:
            offered = await offer_rest(f"http://127.0.0.1:{ingest.port}", token, run, plan.events, plan.rate,
                                       batch=plan.rest_batch)
        else:
            offered = await offer_kafka(settings, batch, plan.rate)
        offered_s = time.time() - wall
        got = await wait_received(conn, processes, WARMUP + plan.events, stall_s=30, deadline=deadline)
        cpu_after = processes.cpu()
        cpu_after["postgres"] = postgres_delta(pg_before, await postgres_cpu(conn, scratch.database))
        cpu_before["postgres"] = 0.0
        undelivered = await wait_delivered(conn, processes, stall_s=30, deadline=deadline)
        rows = await conn.fetch("SELECT event_id, copies, first_received_at FROM receiver_messages "
                                "WHERE receiver = 'portal' AND event_id = ANY($1::uuid[])", list(offered.at))
        rejects = await conn.fetchval("SELECT count(*) FROM receiver_rejects")
        dead = await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'dead'")
    finally:
        processes.stop()
        await conn.close()

    first: dict[uuid.UUID, datetime] = {}
    duplicates = 0
    for row in rows:
        duplicates += row["copies"] - 1
        if row["event_id"] in first:
            duplicates += 1  # the same event under a second MessageID
        first[row["event_id"]] = min(first.get(row["event_id"], row["first_received_at"]), row["first_received_at"])
    latencies = [first[e].timestamp() - offered.at[e] for e in first]
    measured = len(first)
    last = max((t.timestamp() for t in first.values()), default=wall)
    return {
        "events_per_s": measured / (last - wall) if measured else 0.0,
        "cpu_ms_per_event": {k: 1000 * (cpu_after[k] - cpu_before[k]) / max(1, measured) for k in cpu_after},
        "latency_ms": {"p50": 1000 * percentile(latencies, 0.5), "p99": 1000 * percentile(latencies, 0.99),
                       "max": 1000 * max(latencies, default=float("nan"))},
        "lost": plan.events - measured, "duplicates": duplicates, "offered": len(offered.at),
        "offered_s": offered_s, "elapsed_s": last - wall, "received_total": got, "bad_signatures": int(rejects),
        "dead_rows": int(dead), "undelivered_rows": undelivered, "rest_failures": offered.failures[:3],
    }


async def bench(plan: Plan) -> dict:
    logs.configure("warning")
    scratch = Scratch(Settings())
    await scratch.create()
    try:
        batch = events(plan.events, "raw")
        raw = await raw_kafka(scratch.settings, scratch.raw_topic, batch)
        sign = raw_sign(batch)
        e2e = await asyncio.wait_for(pipeline(scratch, plan, events(plan.events, "e2e")), plan.timeout_s + 60)
        insert = await raw_insert(scratch.settings)
    finally:
        await scratch.remove()
    own = sum(v for k, v in e2e["cpu_ms_per_event"].items() if k in ("router", "relay"))
    figures = {
        "events_per_s": e2e["events_per_s"], "raw_events_per_s": raw["events_per_s"],
        "ratio": e2e["events_per_s"] / raw["events_per_s"], "cpu_ms_per_event": e2e["cpu_ms_per_event"],
        "latency_ms": e2e["latency_ms"], "offered_rate": plan.rate, "lost": e2e["lost"],
        "duplicates": e2e["duplicates"],
        "mode": "max" if plan.rate is None else "rate", "events": plan.events, "routers": plan.routers,
        "single": plan.single, "rest": plan.rest, "verify_share": plan.verify_share,
        "router_relay_cpu_ms_per_event": own, "raw_kafka_cpu_ms_per_event": raw["cpu_ms_per_event"],
        "raw_sign_per_s": sign["per_s"], "raw_sign_cpu_ms_per_event": sign["cpu_ms_per_event"],
        "raw_insert_rows_per_s": insert["rows_per_s"],
        "raw_insert_client_cpu_ms_per_row": insert["client_cpu_ms_per_row"],
        "outbox_row_bytes": insert["row_bytes"],
        "floor_cpu_ms_per_event": raw["cpu_ms_per_event"] + sign["cpu_ms_per_event"]
                                  + insert["client_cpu_ms_per_row"],
        **{k: e2e[k] for k in ("offered", "offered_s", "elapsed_s", "bad_signatures", "dead_rows",
                                "undelivered_rows", "rest_failures")},
    }
    return {**figures, "targets": targets.as_json(targets.pipeline(figures))}


def report(figures: dict) -> None:
    mode = (f"backlog of {figures['events']}" if figures["mode"] == "max"
            else f"{figures['offered_rate']:.0f}/s offered for {figures['events'] / figures['offered_rate']:.0f} s")
    table = Table(title=f"pipeline, {mode}, {figures['routers']} router(s){', REST ingest' if figures['rest'] else ''}"
                  f"{', one envelope per POST' if figures['single'] else ''}"
                  f", receiver checks {figures['verify_share']:.0%} of signatures"
                        f" ({datetime.now(MOSCOW):%Y-%m-%d %H:%M} Moscow)")
    for column in ("path", "ejx", "raw baseline", "ratio"):
        table.add_column(column, justify="left" if column == "path" else "right")
    latency = figures["latency_ms"]
    table.add_row("produce → portal recorded", f"{figures['events_per_s']:,.0f} events/s",
                  f"{figures['raw_events_per_s']:,.0f}/s produce→consume", f"{figures['ratio']:.3f}")
    table.add_row("latency p50 / p99 / max",
                  f"{latency['p50']:,.0f} / {latency['p99']:,.0f} / {latency['max']:,.0f} ms", "", "")
    own = figures["router_relay_cpu_ms_per_event"]
    table.add_row("router + relay CPU per event", f"{own:.3f} ms", f"{figures['floor_cpu_ms_per_event']:.3f} ms "
                  "(kafka + sign + COPY)", f"{figures['floor_cpu_ms_per_event'] / own:.3f}" if own else "")
    for name, value in figures["cpu_ms_per_event"].items():
        table.add_row(f"  {name} CPU per event", f"{value:.3f} ms", "", "")
    table.add_row("  sign", "",
                  f"{figures['raw_sign_cpu_ms_per_event']:.3f} ms ({figures['raw_sign_per_s']:,.0f}/s)", "")
    table.add_row("  kafka produce+consume", "", f"{figures['raw_kafka_cpu_ms_per_event']:.3f} ms", "")
    table.add_row(f"  COPY of {figures['outbox_row_bytes']:,.0f} B outbox rows, {RAW_INSERT_BATCH}/tx", "",
                  f"{figures['raw_insert_client_cpu_ms_per_row']:.3f} ms ({figures['raw_insert_rows_per_s']:,.0f}/s)",
                  "")
    table.add_row("lost / doubled / bad sig / dead / undelivered",
                  f"{figures['lost']} / {figures['duplicates']} / {figures['bad_signatures']} / {figures['dead_rows']}"
                  f" / {figures['undelivered_rows']}", "", "")
    console.print(table)
    console.print(targets.table(targets.Target(**target) for target in figures["targets"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--max", action="store_true", help="Offer a backlog of --events at once (the default).")
    mode.add_argument("--rate", type=float, help="Offer this many events per second for --seconds.")
    parser.add_argument("--events", type=int, default=2000, help="Backlog size in --max.")
    parser.add_argument("--seconds", type=float, default=30, help="Duration of the offered load in --rate.")
    parser.add_argument("--routers", type=int, default=1, help="Router processes in the one consumer group.")
    parser.add_argument("--single", action="store_true", help="One envelope per POST (no batch endpoint).")
    parser.add_argument("--rest", action="store_true", help="Ingest over POST /v1/events (`ejx serve --components "
                        "ingest`) instead of producing to Kafka.")
    parser.add_argument("--rest-batch", type=int, default=100, help="Events per POST with --rest.")
    parser.add_argument("--timeout", type=float, default=900, help="Seconds the pipeline run may take at most.")
    parser.add_argument("--json", type=Path, help="Write the figures to this file.")
    parser.add_argument("--verify-share", type=float, default=0.01,
                        help="Share of signatures the receiver checks (1: every one, as the demo and tests).")
    arguments = parser.parse_args()
    count = arguments.events if arguments.rate is None else int(arguments.rate * arguments.seconds)
    plan = Plan(events=count, rate=arguments.rate, seconds=arguments.seconds if arguments.rate else None,
                routers=arguments.routers, single=arguments.single, rest=arguments.rest,
                rest_batch=arguments.rest_batch, timeout_s=arguments.timeout, verify_share=arguments.verify_share)
    figures = asyncio.run(bench(plan))
    report(figures)
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    if figures["lost"] or figures["duplicates"] or figures["bad_signatures"] or figures["undelivered_rows"]:
        console.print(f"[red]lost {figures['lost']}, doubled {figures['duplicates']}, "
                      f"bad signatures {figures['bad_signatures']}, rows left undelivered "
                      f"{figures['undelivered_rows']} (doubles they would send are not counted)[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
