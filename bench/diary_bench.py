"""E-diary requests over SMEV 3: requests answered per second and request → response-available latency, with
100,000 pupils' worth of projection rows, beside the bare projection read.

    .venv/bin/python -m bench.diary_bench [--pupils 100000] [--requests 400] [--concurrency 8]

Uses the configured PostgreSQL (Settings) and a scratch database it removes
afterwards. The projection is filled with COPY (per pupil: four marks, one of them
corrected, one retracted mark, two attendance rows; homework per class). ejx's
SMEV 3 endpoint (with the e-diary service) is served by uvicorn in this process and
asked by the reference requester (:func:`broker.smev3.requester.request_diary`,
GOST keys), one requesting system per worker so that each waits only for its own
answers: a request is SendRequest (signed by the requester, verified by ejx, answered
and queued in one transaction, SendRequestResponse signed by ejx), then GetResponse
until the response is there (two signatures verified) and Ack. The latency is from
the start of SendRequest to the GetResponse that brought the response. The baseline
reads the same pupils' diaries straight from the projection (DiaryReader, no HTTP,
XML or signatures) at the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import uvicorn
from fastapi import FastAPI
from rich.console import Console
from rich.table import Table

from broker.access.participants import CertificateFacts, Participants
from broker.analytics.projections.diary import DiaryPeriod, DiaryReader
from broker.devtools.latency import percentile
from broker.devtools.scratch import create_database, drop_database, scratch_name
from broker.infra.postgres import create_pool
from broker.ops import logs
from broker.settings import Settings
from broker.smev3.client import ClientOptions, Smev3Client
from broker.smev3.codec import Version
from broker.smev3.diary import DiaryService
from broker.smev3.diary_documents import DiaryQuery
from broker.smev3.exchange import MessageExchange
from broker.smev3.queue import SmevQueue
from broker.smev3.requester import RequesterOptions, request_diary
from broker.smev3.service import smev3_router
from broker.xml.schemas import Schemas
from broker.xml.signing import SigningKey, gost

FIRST_DAY = date(2026, 3, 2)
SUBJECTS = ("MATH", "RUS", "PHYS", "HIST")
PUPILS_PER_CLASS = 25


def pupil(n: int) -> str:
    return f"st-{n:06d}b"


async def fill(pool, pupils: int) -> None:
    """The projection of ``pupils`` pupils, COPYed in: marks (one corrected, one retracted), attendance, homework."""
    now = datetime(2026, 3, 20, tzinfo=UTC)
    grades, attendance, homework = [], [], []
    for n in range(pupils):
        school, unit = f"sch-{n // 1000:03d}", f"{5 + n // PUPILS_PER_CLASS % 7}А{n // 175 % 10}"
        for g in range(5):
            day = FIRST_DAY + timedelta(days=g * 3)
            grades.append(("bench", f"g{n}-{g}", 1 + (g == 1), now, school, "five-point", str(3 + g % 3), g == 4,
                           g == 1, "пересдача" if g == 1 else None, now, 1, now, "2025-2026", pupil(n), unit,
                           SUBJECTS[g % 4], "tc-teach1", f"l{n}-{g}", day, "Контрольная работа",
                           Decimal("1"), True, "T3", None, f"g{n}-{g}"))
        for a in range(2):
            attendance.append(("bench", f"a{n}-{a}", 1, school, pupil(n), f"l{n}-{a}", FIRST_DAY + timedelta(days=a),
                               "present" if a else "late", None if a else 5))
        if n % PUPILS_PER_CLASS == 0:
            homework.append(("bench", f"h{n}", 1, school, unit, "MATH", "tc-teach1", FIRST_DAY,
                             FIRST_DAY + timedelta(days=2), "№ 125, 126", "2025-2026"))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("diary_grades", records=grades, columns=(
            "source_system", "grade_record_id", "version", "occurred_at", "school_id", "mark_scale", "mark_value",
            "retracted", "corrected", "change_reason", "changed_at", "posted_version", "posted_at", "academic_year",
            "student_id", "class_unit", "subject_code", "teacher_id", "lesson_id", "lesson_date", "work_type",
            "weight", "counts_in_average", "term_id", "comment", "change_record_id"))
        await conn.copy_records_to_table("diary_attendance", records=attendance, columns=(
            "source_system", "source_record_id", "version", "school_id", "student_id", "lesson_id", "day", "status",
            "minutes_late"))
        await conn.copy_records_to_table("diary_homework", records=homework, columns=(
            "source_system", "source_record_id", "version", "school_id", "class_unit", "subject_code", "teacher_id",
            "lesson_date", "due_date", "text", "academic_year"))
        await conn.execute("ANALYZE diary_grades; ANALYZE diary_attendance; ANALYZE diary_homework")


async def requests_over_smev(base: str, keys: list[SigningKey], trusted: bytes, asked: list[str]
                             ) -> tuple[float, list[float]]:
    """Requests answered per second and each one's latency (ms), one requesting system per worker."""
    pending, latencies, schemas = list(asked), [], Schemas.load()

    async def worker(key: SigningKey) -> None:
        client = Smev3Client(f"{base}/smev3/1.3", key, trusted=frozenset({trusted}),
                             options=ClientOptions(version=Version.V1_3))
        try:
            while pending:
                started = time.perf_counter()
                answer = await request_diary(client, DiaryQuery(pending.pop()), version=Version.V1_3,
                                             schemas=schemas, options=RequesterOptions(poll_s=0.002))
                latencies.append((time.perf_counter() - started) * 1000)
                assert answer.outcome == "answered" and len(answer.diary["grades"]) == 4, answer.outcome
        finally:
            await client.aclose()

    started = time.perf_counter()
    await asyncio.gather(*(worker(key) for key in keys))
    return len(asked) / (time.perf_counter() - started), latencies


async def raw_reads(pool, asked: list[str], concurrency: int) -> float:
    pending = list(asked)

    async def reader() -> None:
        while pending:
            await DiaryReader(pool).diary(pending.pop(), DiaryPeriod())

    started = time.perf_counter()
    await asyncio.gather(*(reader() for _ in range(concurrency)))
    return len(asked) / (time.perf_counter() - started)


async def main(pupils: int, requests: int, concurrency: int, port: int) -> None:
    settings = Settings()
    logs.configure("warning")
    console = Console()
    name = scratch_name()
    dsn = await create_database(settings, name)
    pool = await create_pool(settings.model_copy(update={"database_url": dsn}), max_size=concurrency + 4)
    try:
        started = time.perf_counter()
        await fill(pool, pupils)
        console.print(f"projection of {pupils:,} pupils filled in {time.perf_counter() - started:.1f} s")
        ejx_key = SigningKey.from_pem(*gost.generate_key_and_certificate("ejx SMEV (bench)"))
        keys = []
        for n in range(concurrency):
            key_pem, cert_pem = gost.generate_key_and_certificate(f"EPGU {n} (bench)")
            keys.append(SigningKey.from_pem(key_pem, cert_pem))
            await Participants(pool).add(f"EPGU_{n}", CertificateFacts.from_pem(cert_pem), service="diary")
        diary = DiaryService(pool=pool, schemas=Schemas.load(), key=ejx_key)
        app = FastAPI()
        app.include_router(smev3_router(MessageExchange(queue=SmevQueue(pool), participants=Participants(pool),
                                                        diary=diary)))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="off"))
        running = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        asked = [pupil(n) for n in random.Random(7).sample(range(pupils), requests)]
        try:
            rate, latencies = await requests_over_smev(f"http://127.0.0.1:{port}", keys, ejx_key.certificate_der,
                                                       asked)
        finally:
            server.should_exit = True
            await running
        raw = await raw_reads(pool, asked, concurrency)
    finally:
        await pool.close()
        await drop_database(settings, name)
    table = Table(title=f"E-diary over SMEV 3, {pupils:,} pupils, {requests} requests, {concurrency} in flight")
    for column in ("path", "requests/s", "p50 ms", "p99 ms", "vs raw"):
        table.add_column(column, justify="right")
    table.add_row("SendRequest → GetResponse → Ack (reference requester ↔ ejx, GOST)", f"{rate:,.0f}",
                  f"{percentile(latencies, 0.5):.1f}", f"{percentile(latencies, 0.99):.1f}", f"{rate / raw:.2f}")
    table.add_row("raw DiaryReader.diary (SQL only)", f"{raw:,.0f}", "", "", "1.00")
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pupils", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=18342)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.pupils, arguments.requests, arguments.concurrency, arguments.port))
