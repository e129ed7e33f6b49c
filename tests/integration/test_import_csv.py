"""CSV exports imported through the ingest service into a real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.csv_import import RejectsFile, import_csv
from broker.app.cli import main
from broker.domain import model
from broker.domain.faults import InvalidContent
from broker.xml import hardened
from tests.delivery_support import metric
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


def export_like_the_fixture(tmp_path: Path, edit) -> Path:  # noqa: ANN001 - edit: (header, rows) → (header, rows)
    """The UTF-8 fixture's header and first two rows, edited, as a new export."""
    header, *rows = (FIXTURES / "grades_ru_utf8.csv").read_text("utf-8").splitlines()[:3]
    header, rows = edit(header, rows)
    path = tmp_path / "edited.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


async def test_a_row_shifted_by_an_unquoted_delimiter_is_rejected_not_cut(ingest_settings, db_pool, tmp_path):
    def mark_last(line: str) -> str:  # …;Комментарий;Оценка, as in the reviewer's export
        cells = line.split(";")
        return ";".join([*cells[:14], *cells[15:], cells[14]])

    def shift(header: str, rows: list[str]) -> tuple[str, list[str]]:
        first, second = (mark_last(row) for row in rows)
        return mark_last(header), [first.replace(";Без ошибок;", ";Молодец; 4;"), second]  # mark 5

    shifted = export_like_the_fixture(tmp_path, shift)
    await register(db_pool)
    async with ingest_service(ingest_settings, db_pool) as service:
        report = await run_import(service, shifted, tmp_path / "rejects.csv")

    assert (report.rows, report.accepted, report.rejected) == (2, 1, 1)
    [reject] = list(csv.DictReader((tmp_path / "rejects.csv").open(encoding="utf-8", newline="")))
    assert (reject["line"], reject["path"]) == ("2", "/")
    assert reject["reason"].startswith("line 2 has 19 cells, the header has 18")
    records = await read_topic(ingest_settings, ingest_settings.events_topic)
    assert [r.headers["idempotency_key"] for r in records] == [f"{VENDOR}/g-1002/1"]


async def test_two_header_cells_for_one_column_refuse_the_whole_file(ingest_settings, db_pool, tmp_path):
    ambiguous = export_like_the_fixture(tmp_path, lambda header, rows: (
        header.replace("Комментарий", "Отметка"), rows))
    await register(db_pool)
    async with ingest_service(ingest_settings, db_pool) as service:
        with pytest.raises(InvalidContent) as caught:
            await run_import(service, ambiguous, tmp_path / "rejects.csv")
    assert "'Оценка' and 'Отметка'" in caught.value.description
    assert await read_topic(ingest_settings, ingest_settings.events_topic) == []


async def test_rejected_rows_are_counted_by_fault_code(ingest_settings, db_pool, tmp_path):
    before = {code: metric("ejx_events_rejected_total", code=code) for code in ("InvalidContent", "AccessDenied")}
    await register(db_pool)
    async with ingest_service(ingest_settings, db_pool) as service:
        await run_import(service, FIXTURES / "grades_ru_utf8.csv", tmp_path / "rejects.csv")
    counted = {code: metric("ejx_events_rejected_total", code=code) - before[code] for code in before}
    assert counted == {"InvalidContent": 2, "AccessDenied": 1}  # lines 4, 5 (bad cells) and 6 (school)


@pytest.mark.parametrize(("content", "reason"), [
    ("Код записи;Оценка\rg-1;5\rg-2;4\r".encode(), "lines end in CR only"),
    ("Код записи;Оценка\r\ng-1;5\r\n".encode("utf-16"), "UTF-16 is not supported"),
], ids=["cr-only", "utf-16"])
async def test_a_file_ejx_cannot_read_fails_the_command_in_one_line(ingest_settings, db_pool, tmp_path,
                                                                    content, reason):
    await register(db_pool)
    export = tmp_path / "journal.csv"
    export.write_bytes(content)
    env = {"EJX_DATABASE_URL": ingest_settings.database_dsn, "EJX_KAFKA_BOOTSTRAP": ingest_settings.kafka_address,
           "EJX_EVENTS_TOPIC": ingest_settings.events_topic}
    result = await asyncio.to_thread(CliRunner().invoke, main, ["import", "csv", str(export), "--vendor", VENDOR],
                                     env=env, catch_exceptions=False)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("InvalidContent: ") and reason in last
    assert await read_topic(ingest_settings, ingest_settings.events_topic) == []
