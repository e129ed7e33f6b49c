"""CSV exports imported through the ingest service into a real Kafka and PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from adapters.csv_import import RejectsFile, import_csv
from broker.domain import model
from broker.xml import hardened
from tests.integration.ingest_support import (
    VENDOR,
    ingest_service,
    read_topic,
    register,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

FIXTURES = Path(__file__).parent.parent / "fixtures" / "adapters"


@pytest.fixture
def ingest_settings(db_settings, fresh_topic):
    return db_settings.model_copy(update={"events_topic": fresh_topic})


async def run_import(service, path: Path, rejects: Path, *, batch_size: int = 2):
    vendor = await service.registry.vendor(VENDOR)
    sink = RejectsFile(rejects)
    try:
        return await import_csv(service, vendor, path, rejects=sink, batch_size=batch_size)
    finally:
        sink.close()


def rejected(path: Path) -> list[tuple[int, str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return sorted((int(row["line"]), row["code"], row["path"]) for row in csv.DictReader(file))


@pytest.mark.parametrize(("name", "encoding", "prefix"), [("grades_ru_utf8.csv", "utf-8", "g-10"),
                                                          ("grades_ru_cp1251.csv", "cp1251", "g-20")])
async def test_an_export_twice_gives_each_event_once_and_reports_bad_rows_by_line(
        ingest_settings, db_pool, tmp_path, name, encoding, prefix):
    await register(db_pool)
    async with ingest_service(ingest_settings, db_pool) as service:
        first = await run_import(service, FIXTURES / name, tmp_path / "first.csv")
        second = await run_import(service, FIXTURES / name, tmp_path / "second.csv")

    assert first.encoding == encoding
    assert (first.rows, first.accepted, first.duplicates, first.rejected) == (6, 3, 0, 3)
    assert (second.rows, second.accepted, second.duplicates, second.rejected) == (6, 0, 3, 3)
    expected_rejects = [(4, "InvalidContent", "/mark"), (5, "InvalidContent", "/occurred_at"),
                        (6, "AccessDenied", "/school_id")]
    assert rejected(tmp_path / "first.csv") == rejected(tmp_path / "second.csv") == expected_rejects

    records = await read_topic(ingest_settings, ingest_settings.events_topic)
    assert sorted(r.headers["idempotency_key"] for r in records) == [
        f"{VENDOR}/{prefix}01/1", f"{VENDOR}/{prefix}02/1", f"{VENDOR}/{prefix}06/1"]
    events = {e.source_record_id: e for e in (model.event_from_xml(hardened.parse(r.value)) for r in records)}
    assert events[f"{prefix}01"].work_type == "Контрольная работа"
    assert events[f"{prefix}01"].occurred_at.isoformat() == "2026-10-14T09:41:00+03:00"
    assert events[f"{prefix}06"].mark == model.Mark(model.MarkScale.PASS_FAIL, "зач")
    assert events[f"{prefix}06"].comment == "многострочный\nкомментарий"
    assert events[f"{prefix}06"].counts_in_average is False


async def test_english_headers_and_other_event_types(ingest_settings, db_pool, tmp_path):
    await register(db_pool)
    async with ingest_service(ingest_settings, db_pool) as service:
        report = await run_import(service, FIXTURES / "attendance_en.csv", tmp_path / "rejects.csv")
    assert (report.accepted, report.rejected) == (2, 0)
    records = await read_topic(ingest_settings, ingest_settings.events_topic)
    assert {r.headers["event_type"] for r in records} == {"AttendanceMarked"}
