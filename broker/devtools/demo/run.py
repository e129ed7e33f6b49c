"""``ejx demo``: a simulated school day through every adapter, the router, the relay, both receivers and SMEV 3.

The demo runs in a database and topics of its own (named after the run), so its
report counts exactly what it generated, however often it runs. It proves the
contract end to end: every accepted event reaches each of its receivers once,
with a verified signature; every bad submission gets its fault code; the portal's
e-diary requests are answered; the message log verifies.
"""

from __future__ import annotations

import asyncio
import csv
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapters.csv_import import RejectsFile, import_csv
from adapters.ingest import event_id_for
from broker.access.credentials import Credentials, Kind
from broker.access.registry import Registry, School
from broker.app import bootstrap
from broker.devtools.demo.diary import diary_round
from broker.devtools.demo.payloads import csv_row, fault_code, oneroster_bundle
from broker.devtools.demo.report import DemoReport
from broker.devtools.demo.setup import (
    demo_settings,
    ensure_keys,
    register_agency,
    remove_run_data,
    start_processes,
    stop_processes,
)
from broker.devtools.latency import percentile
from broker.devtools.scratch import create_database
from broker.devtools.simulation import SchoolDay, simulate
from broker.domain.faults import Failure
from broker.domain.model import (
    Event,
    GradeCorrected,
    GradePosted,
    GradeRetracted,
    event_to_dict,
)
from broker.domain.routing import RoutingTable
from broker.infra import kafka
from broker.settings import Settings

log = structlog.get_logger(__name__)

REST_BATCH = 100
RECEIVERS = ("portal", "interagency")
"""The reference receivers, named like the outbox destinations they stand in for."""


@dataclass(frozen=True)
class DemoOptions:
    """Size and behaviour of one demo run."""

    schools: int = 6
    """Schools that send (one more is registered and stays silent)."""
    students_per_school: int = 30
    days: int = 1
    seed: int = 7
    keep: bool = False
    """Leave everything running (dashboard, receivers) until Ctrl-C."""
    timeout_s: float = 300.0
    """Longest wait for deliveries before the rest counts as lost."""


class Demo:
    """One run: set up, start, submit, wait, report."""

    def __init__(self, settings: Settings, options: DemoOptions, console: Console) -> None:
        self.base_settings = settings
        self.options = options
        self.console = console
        self.run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]
        self.report = DemoReport(run_id=self.run_id)
        self.accepted_at: dict[uuid.UUID, float] = {}
        """Accepted event_id → when ejx's 202 (or the import batch) confirmed it."""
        self.accepted_events: dict[uuid.UUID, tuple[str, str]] = {}
        """Accepted event_id → (event type, school_id), for the routing expectation."""
        self.authority_token = ""
        """An authority of every district: reads the monitoring view, signs in to the dashboard."""

    async def run(self) -> DemoReport:
        started = time.monotonic()
        ensure_keys(self.base_settings)
        database = f"ejx_demo_{self.run_id}"
        self.settings = demo_settings(self.base_settings, self.run_id,
                                      await create_database(self.base_settings, database))
        self.logs = self.settings.state_dir / "demo" / self.run_id
        await kafka.ensure_topics(self.settings, [self.settings.events_topic, self.settings.dlq_topic,
                                                  self.settings.interagency_topic])
        self.console.print(f"[bold]ejx demo[/] run {self.run_id}: database {database}, "
                           f"topics *.demo-{self.run_id}")
        # The simulated days end yesterday, so the monitoring view sees the schools as live.
        first_day = datetime.now(UTC).date() - timedelta(days=self.options.days)
        day = simulate(schools=self.options.schools, students_per_school=self.options.students_per_school,
                       days=self.options.days, seed=self.options.seed, first_day=first_day)
        self.report.generated_valid = day.valid_count
        pool = await asyncpg.create_pool(self.settings.database_dsn, min_size=1, max_size=6)
        processes: list[subprocess.Popen] = []
        passed = False
        try:
            tokens = await self._register(pool, day)
            await register_agency(self.settings, pool)
            processes = self._start()
            base = f"http://127.0.0.1:{self.settings.http_port}"
            self.report.dashboard_url = f"{base}/dashboard"
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                await self._wait_ready(client, processes)
                submit_started = time.monotonic()
                await self._submit(client, day, tokens)
                await self._wait_for_deliveries(pool)
                self.report.events_per_s = round(self.report.accepted / (time.monotonic() - submit_started), 1)
                await self._collect(pool, client)
                await diary_round(self.settings, pool, day, self.report)  # the portal asks over SMEV 3
            self.report.elapsed_s = round(time.monotonic() - started, 1)
            passed = not self.report.problems
            if self.options.keep:
                self.console.print(f"Running: dashboard at {self.report.dashboard_url} (sign in with the authority "
                                   f"token {self.authority_token}), logs in {self.logs} (Ctrl-C to stop)")
                await _forever()
        finally:
            stop_processes(processes)
            await pool.close()
            # A passing run leaves nothing behind; a failing, stopped or kept one keeps its data to look at.
            if passed and not self.options.keep:
                await remove_run_data(self.base_settings, self.settings, database)
            else:
                self.console.print(f"Kept for inspection: database {database}, topics *.demo-{self.run_id}, "
                                   f"logs in {self.logs}")
        return self.report

    async def _register(self, pool: asyncpg.Pool, day: SchoolDay) -> dict[str, str]:
        registry = Registry(pool)
        tokens = {vendor.name: await registry.add_vendor(vendor.name) for vendor in day.vendors}
        # The report reads the monitoring view as an authority of every district would.
        self.authority_token = await Credentials(pool).add(Kind.AUTHORITY, "demo-authority")
        await registry.import_schools(School(school_id=s.school_id, name=s.name, district=s.district,
                                             vendor_id=s.vendor) for s in day.schools)
        self.districts = {s.school_id: s.district for s in day.schools}
        return tokens

    def _start(self) -> list[subprocess.Popen]:
        """ejx (router, everything else), the reference portal receiver and the interagency SMEV 3 client."""
        return start_processes(self.settings, self.logs)

    async def _wait_ready(self, client: httpx.AsyncClient, processes: list[subprocess.Popen]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in processes):
                raise Failure(f"a demo process exited early; see the logs in {self.logs}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise Failure(f"ejx did not become ready within 60 s; see {self.logs}/serve.log")

    # ---- submissions -------------------------------------------------------------------------

    async def _submit(self, client: httpx.AsyncClient, day: SchoolDay, tokens: dict[str, str]) -> None:
        columns = [TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=self.console) as progress:
            for vendor in day.vendors:
                events = day.events.get(vendor.name, [])
                task = progress.add_task(f"{vendor.name} ({vendor.channel})", total=len(events))
                if vendor.channel == "csv":
                    await self._submit_csv(vendor.name, events, lambda n, t=task: progress.advance(t, n))
                elif vendor.channel == "oneroster":
                    is_grade = [isinstance(e, (GradePosted, GradeCorrected, GradeRetracted)) for e in events]
                    grades = [e for e, grade in zip(events, is_grade) if grade]
                    others = [e for e, grade in zip(events, is_grade) if not grade]
                    await self._submit_oneroster(client, tokens[vendor.name], grades, "oneroster",
                                                 lambda n, t=task: progress.advance(t, n))
                    await self._submit_rest(client, tokens[vendor.name], others, "rest",
                                            lambda n, t=task: progress.advance(t, n))
                else:
                    await self._submit_rest(client, tokens[vendor.name], events, "rest",
                                            lambda n, t=task: progress.advance(t, n))
            task = progress.add_task("bad submissions", total=len(day.rejected) + 2)
            await self._submit_bad(client, day, tokens, lambda: progress.advance(task))

    def _accept(self, channel: str, receipts: Iterable[dict], events: dict[int, tuple[str, str]]) -> None:
        now = time.monotonic()
        for receipt in receipts:
            event_id = uuid.UUID(receipt["event_id"])
            if event_id not in self.accepted_at:
                self.accepted_at[event_id] = now
                self.accepted_events[event_id] = events[receipt["index"]]
                self.report.accepted_by_channel[channel] = self.report.accepted_by_channel.get(channel, 0) + 1
        self.report.accepted = len(self.accepted_at)

    async def _post(self, client: httpx.AsyncClient, path: str, token: str, body: object) -> httpx.Response:
        for _ in range(20):
            response = await client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 503:
                return response
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        return response

    async def _submit_rest(self, client, token: str, events: list[Event], channel: str, advance) -> None:
        for start in range(0, len(events), REST_BATCH):
            batch = events[start:start + REST_BATCH]
            response = await self._post(client, "/v1/events", token, [event_to_dict(e) for e in batch])
            if response.status_code != 202:
                raise RuntimeError(f"valid batch refused: {response.status_code} {response.text[:500]}")
            self._accept(channel, response.json()["events"],
                         {i: (e.type.value, e.school_id) for i, e in enumerate(batch)})
            advance(len(batch))

    async def _submit_csv(self, vendor: str, events: list[Event], advance) -> None:
        """Write the vendor's export as a CSV file and import it like an operator would."""
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / f"{vendor}.csv"
            rows = [csv_row(event) for event in events]
            columns = list(dict.fromkeys(column for row in rows for column in row))
            with path.open("w", encoding="utf-8", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
            async with bootstrap.ingest_service(self.settings) as service:
                sender = await service.registry.vendor(vendor)
                rejects = RejectsFile(Path(scratch) / "rejects.csv")
                report = await import_csv(service, sender, path, rejects=rejects)
            if report.rejected:
                raise RuntimeError(f"CSV import rejected {report.rejected} valid row(s)")
        receipts = [{"index": i, "event_id": str(event_id_for(e.idempotency_key))} for i, e in enumerate(events)]
        self._accept("csv", receipts, {i: (e.type.value, e.school_id) for i, e in enumerate(events)})
        advance(len(events))

    async def _submit_oneroster(self, client, token: str, grades: list[Event], channel: str, advance) -> None:
        """Grades as OneRoster results: postings first, then corrections and retractions of them."""
        posted = {e.source_record_id: e for e in grades if isinstance(e, GradePosted)}
        changes = [e for e in grades if not isinstance(e, GradePosted)]
        for round_events in (list(posted.values()), changes):
            for start in range(0, len(round_events), REST_BATCH):
                batch = round_events[start:start + REST_BATCH]
                bundle = oneroster_bundle(batch, posted)
                response = await self._post(client, "/v1/oneroster/results", token, bundle)
                if response.status_code != 202:
                    raise RuntimeError(f"OneRoster batch refused: {response.status_code} {response.text[:500]}")
                self._accept(channel, response.json()["events"],
                             {i: (e.type.value, e.school_id) for i, e in enumerate(batch)})
                advance(len(batch))

    async def _submit_bad(self, client, day: SchoolDay, tokens: dict[str, str], advance) -> None:
        expected: Counter[str] = Counter(bad.expected_code for bad in day.rejected)
        observed: Counter[str] = Counter()
        for bad in day.rejected:
            response = await self._post(client, "/v1/events", tokens[bad.vendor], bad.payload)
            observed[fault_code(response)] += 1
            advance()
        # Nobody's token, and a billion-laughs document: both refused, nothing produced.
        response = await self._post(client, "/v1/events", "not-a-token", [])
        expected["SenderIsNotRegistered"] += 1
        observed[fault_code(response)] += 1
        advance()
        bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
                '<GradePosted xmlns="urn://ejx/events/1">&lol2;</GradePosted>')
        response = await client.post("/v1/events", content=bomb.encode(), headers={
            "Authorization": f"Bearer {tokens[day.vendors[0].name]}", "Content-Type": "application/xml"})
        expected["InvalidContent"] += 1
        observed[fault_code(response)] += 1
        advance()
        self.report.expected_rejections = dict(sorted(expected.items()))
        self.report.rejected_by_code = dict(sorted(observed.items()))

    # ---- deliveries --------------------------------------------------------------------------

    def _expected_pairs(self) -> set[tuple[uuid.UUID, str]]:
        routing = RoutingTable.load(self.settings.routing_file)
        pairs = set()
        for event_id, (event_type, school_id) in self.accepted_events.items():
            for route in routing.route(event_type=event_type, school_id=school_id,
                                       district=self.districts.get(school_id)):
                pairs.add((event_id, route.channel))
        return pairs

    async def _received(self, pool: asyncpg.Pool) -> list[asyncpg.Record]:
        return await pool.fetch("SELECT receiver, event_id, copies, first_received_at FROM receiver_messages")

    async def _wait_for_deliveries(self, pool: asyncpg.Pool) -> None:
        expected = self._expected_pairs()
        self.expected = expected
        per_destination = Counter(destination for _, destination in expected)
        self.report.expected_deliveries = dict(sorted(per_destination.items()))
        columns = [TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        deadline = time.monotonic() + self.options.timeout_s
        with Progress(*columns, console=self.console) as progress:
            tasks = {name: progress.add_task(f"received by {name}", total=count)
                     for name, count in per_destination.items()}
            analytics = progress.add_task("applied by analytics", total=len(self.accepted_events))
            while True:
                # Counts while waiting (cheap per poll); the exact per-event check is in _collect.
                received = {row["receiver"]: row["n"] for row in await pool.fetch(
                    "SELECT receiver, count(DISTINCT event_id) AS n FROM receiver_messages GROUP BY 1")}
                applied = await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'analytics'")
                # The relay marks a row delivered after the receiver's answer: wait for that too.
                undelivered = await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'")
                for name, task in tasks.items():
                    progress.update(task, completed=received.get(name, 0))
                progress.update(analytics, completed=applied)
                done = all(received.get(name, 0) >= count for name, count in per_destination.items())
                if (done and not undelivered and applied >= len(self.accepted_events)) \
                        or time.monotonic() > deadline:
                    return
                await asyncio.sleep(0.25)

    async def _collect(self, pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
        rows = await self._received(pool)
        seen = {(row["event_id"], row["receiver"]) for row in rows}
        by_event: Counter[tuple[uuid.UUID, str]] = Counter()
        for row in rows:
            by_event[(row["event_id"], row["receiver"])] += row["copies"]
        for name in RECEIVERS:
            mine = [row for row in rows if row["receiver"] == name]
            self.report.received[name] = len({row["event_id"] for row in mine})
            self.report.duplicates[name] = sum(n - 1 for (_, r), n in by_event.items() if r == name)
            self.report.lost[name] = sum(1 for pair in self.expected if pair[1] == name and pair not in seen)
            self.report.bad_signatures[name] = await pool.fetchval(
                "SELECT count(*) FROM receiver_rejects WHERE receiver = $1", name)
        self.report.envelopes_signed = await pool.fetchval("SELECT count(DISTINCT message_id) FROM outbox")
        self.report.delivered = {row["destination"]: row["n"] for row in await pool.fetch(
            "SELECT destination, count(*) AS n FROM outbox WHERE status = 'delivered' GROUP BY 1 ORDER BY 1")}
        latencies = sorted(
            (row["first_received_at"].timestamp() - self._wall(self.accepted_at[row["event_id"]])) * 1000
            for row in rows if row["event_id"] in self.accepted_at)
        if latencies:
            self.report.latency_p50_ms = round(percentile(latencies, 0.5), 1)
            self.report.latency_p99_ms = round(percentile(latencies, 0.99), 1)
        schools = (await client.get("/v1/monitoring/schools",
                                    headers={"Authorization": f"Bearer {self.authority_token}"})).json()
        self.report.school_statuses = dict(sorted(Counter(s["status"] for s in schools["schools"]).items()))

    def _wall(self, monotonic: float) -> float:
        """A monotonic instant as wall-clock seconds (receivers stamp with the database's clock)."""
        return time.time() - (time.monotonic() - monotonic)


async def _forever() -> None:
    await asyncio.Event().wait()

