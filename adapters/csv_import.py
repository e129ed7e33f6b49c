"""E-journal CSV exports → canonical events, streamed in bounded batches.

A 1 GB export is read line by line (bytes), decoded per line, mapped row by
row and published ``batch_size`` rows at a time, so memory stays flat. Bad
rows are written to a rejects file with their line number and reason; good
rows go through the same :class:`adapters.ingest.IngestService` as REST, so
re-running a file is deduplicated by idempotency key and adds nothing.

Columns are the canonical JSON field names or their Russian equivalents (see
:data:`COLUMN_ALIASES`); ``mark`` and ``mark_scale`` become ``mark: {value, scale}``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from zoneinfo import ZoneInfo

import structlog

from adapters.problems import Problem
from broker.access.registry import Vendor
from broker.domain.calendar import SCHOOL_ZONE
from broker.domain.faults import InvalidContent
from broker.ops import metrics

if TYPE_CHECKING:
    from adapters.ingest import IngestService

log = structlog.get_logger(__name__)

DEFAULT_EVENT_TYPE = "GradePosted"
SNIFF_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 20
"""Longest physical line read into memory (line end included); see :class:`CsvExport`."""
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# Russian header → canonical column. Headers are compared lower-cased, trimmed, «ё» as «е».
COLUMN_ALIASES: dict[str, str] = {
    "тип события": "type", "тип": "type", "событие": "type",
    "код записи": "source_record_id", "запись": "source_record_id", "ид записи": "source_record_id",
    "версия": "version",
    "дата выставления": "occurred_at", "время выставления": "occurred_at", "дата и время": "occurred_at",
    "школа": "school_id", "код школы": "school_id", "оо": "school_id", "код оо": "school_id",
    "учебный год": "academic_year",
    "автор": "actor_id", "кто выставил": "actor_id",
    "ученик": "student_id", "код ученика": "student_id", "обучающийся": "student_id",
    "класс": "class_unit",
    "предмет": "subject_code", "код предмета": "subject_code",
    "учитель": "teacher_id", "код учителя": "teacher_id",
    "урок": "lesson_id", "код урока": "lesson_id",
    "дата урока": "lesson_date",
    "вид работы": "work_type", "тип работы": "work_type",
    "вес": "weight", "вес оценки": "weight",
    "шкала": "mark_scale",
    "оценка": "mark", "отметка": "mark",
    "учитывать в среднем": "counts_in_average", "в среднем": "counts_in_average",
    "период": "term_id", "четверть": "term_id", "учебный период": "term_id",
    "комментарий": "comment", "примечание": "comment",
    "исправляемая оценка": "grade_ref", "ссылка на оценку": "grade_ref",
    "причина": "reason",
    "дата": "date",
    "посещаемость": "status", "статус": "status",
    "опоздание (мин)": "minutes_late", "опоздание": "minutes_late",
    "срок сдачи": "due_date",
    "задание": "text", "текст задания": "text",
    "итоговый период": "period",
}
INTEGER_COLUMNS = frozenset({"version", "minutes_late"})
NUMBER_COLUMNS = frozenset({"weight"})
BOOLEAN_COLUMNS = frozenset({"counts_in_average"})
DATE_COLUMNS = frozenset({"lesson_date", "date", "due_date"})
DATETIME_COLUMNS = frozenset({"occurred_at"})
_TRUE = frozenset({"1", "true", "yes", "да", "д", "+"})
_FALSE = frozenset({"0", "false", "no", "нет", "н", "-"})
_RU_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")
_RU_DATETIME = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?$")


def canonical_column(header: str) -> str:
    name = header.strip().lstrip("\ufeff").lower().replace("ё", "е")
    return COLUMN_ALIASES.get(name, name.replace(" ", "_"))


def detect_encoding(head: bytes) -> str:
    """UTF-8 (with or without BOM) if the head decodes as such, else CP1251 (Windows exports)."""
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the end of the sample
            return "cp1251"
    return "utf-8"


def detect_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (";", ",", "\t")}
    return max(counts, key=counts.get) if any(counts.values()) else ","


def mark_scale(value: str) -> str:
    """The scale a bare mark belongs to, when the export has no scale column."""
    v = value.strip().lower()
    if v in ("зач", "незач", "зачет", "незачет", "зачтено", "не зачтено"):
        return "pass-fail"
    if v.isdigit():
        number = int(v)
        if 1 <= number <= 5:
            return "five-point"
        if number <= 10:
            return "ten"
        if number <= 100:
            return "hundred"
    return "five-point"  # leave the verdict on odd values ("н/а", "осв") to the schema


@dataclass(frozen=True)
class RowMapper:
    """One CSV row (canonical column → cell) → an event in its JSON form."""

    timezone: ZoneInfo = SCHOOL_ZONE

    def event(self, row: dict[str, str]) -> dict[str, object]:
        cells = {name: value.strip() for name, value in row.items() if name and value and value.strip()}
        event: dict[str, object] = {"type": cells.pop("type", DEFAULT_EVENT_TYPE)}
        scale = cells.pop("mark_scale", None)
        for name, value in cells.items():
            event[name] = self._value(name, value)
        if "mark" in event:
            event["mark"] = {"scale": scale or mark_scale(str(event["mark"])), "value": event["mark"]}
        return event

    def _value(self, name: str, value: str) -> object:
        try:
            if name in INTEGER_COLUMNS:
                return int(value)
            if name in NUMBER_COLUMNS:
                number = float(value.replace(",", "."))
                return int(number) if number.is_integer() else number
            if name in BOOLEAN_COLUMNS:
                if value.lower() in _TRUE:
                    return True
                if value.lower() in _FALSE:
                    return False
                raise ValueError("expected да/нет, true/false or 1/0")
            if name in DATE_COLUMNS:
                return self._date(value)
            if name in DATETIME_COLUMNS:
                return self._datetime(value)
        except ValueError as error:
            raise InvalidContent(f"column {name}: {value!r} is not acceptable ({error})",
                                 details={"path": f"/{name}"}) from None
        return value

    def _date(self, value: str) -> str:
        ru = _RU_DATE.match(value)
        if ru:
            return date(int(ru[3]), int(ru[2]), int(ru[1])).isoformat()
        return date.fromisoformat(value).isoformat()

    def _datetime(self, value: str) -> str:
        ru = _RU_DATETIME.match(value)
        if ru:
            moment = datetime(int(ru[3]), int(ru[2]), int(ru[1]), int(ru[4]), int(ru[5]), int(ru[6] or 0))
        else:
            moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.timezone)
        return moment.isoformat()


@dataclass(frozen=True)
class CsvRow:
    line: int
    """Physical line where the record starts (the header is line 1)."""
    cells: dict[str, str]
    undecodable: bool = False
    broken: str | None = None
    """Why the CSV record itself could not be read."""


class CsvExport:
    """An export file read as a stream of rows; ``bytes_read`` says how far it got.

    The file as a whole is refused (InvalidContent, nothing read further) when the header cannot be
    trusted: UTF-16, CR-only line ends (an old Mac "CSV (Macintosh)" is one endless line), a header
    over ``max_line_bytes``, or two header cells meaning one column. A row is rejected, and the import
    goes on, when it has more cells than the header (an unquoted delimiter shifted them) or a line
    over ``max_line_bytes`` (skipped in bounded reads, never held whole). Fewer cells than the header
    are read as empty trailing cells, as some exports leave them out; empty cells past the header (a
    delimiter ending every row) are nothing.
    """

    def __init__(self, stream: BinaryIO, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._stream = stream
        self._max_line_bytes = max_line_bytes
        self.bytes_read = 0
        head = stream.peek(SNIFF_BYTES)[:SNIFF_BYTES] if hasattr(stream, "peek") else b""
        self.encoding = detect_encoding(head)
        self._bad_lines: set[int] = set()
        self._long_lines: set[int] = set()
        self._physical_line = 0

    def _raw_lines(self) -> Iterator[bytes]:
        """Physical lines; one over the limit is yielded cut there, and the rest of it read and dropped."""
        limit = self._max_line_bytes
        while raw := self._stream.readline(limit + 1):
            self.bytes_read += len(raw)
            self._physical_line += 1
            too_long = len(raw) > limit
            if too_long:
                self._long_lines.add(self._physical_line)
            yield raw
            while too_long and raw and not raw.endswith(b"\n"):
                raw = self._stream.readline(limit + 1)
                self.bytes_read += len(raw)

    def _lines(self, raws: Iterator[bytes]) -> Iterator[str]:
        decoding = "utf-8" if self.encoding == "utf-8-sig" else self.encoding
        for raw in raws:
            if self._physical_line in self._long_lines:
                yield "\n"  # an empty line for the reader; rows() rejects the record that spans it
                continue
            try:
                yield raw.decode(decoding)
            except UnicodeDecodeError:
                self._bad_lines.add(self._physical_line)
                yield raw.decode(decoding, errors="replace")

    def _header(self, raw: bytes | None) -> list[str]:
        if raw is None:
            raise InvalidContent("the file is empty")
        if raw.startswith(_UTF16_BOMS):
            raise InvalidContent("UTF-16 is not supported, save as UTF-8 or Windows-1251")
        if b"\r" in raw.rstrip(b"\r\n"):
            raise InvalidContent("lines end in CR only (old Mac \"CSV (Macintosh)\"); "
                                 "save as CSV UTF-8 or CSV (Windows)")
        if 1 in self._long_lines:
            raise InvalidContent(f"line 1 (the header) is longer than {self._max_line_bytes} bytes")
        line = raw.removeprefix(b"\xef\xbb\xbf").decode(self.encoding, errors="replace")
        self.delimiter = detect_delimiter(line)
        try:
            header = next(csv.reader([line], delimiter=self.delimiter), [])
        except csv.Error as error:
            raise InvalidContent(f"line 1 (the header) is not CSV: {error}") from None
        meaning: dict[str, str] = {}
        for cell, name in zip(header, map(canonical_column, header), strict=True):
            if name and name in meaning:
                raise InvalidContent(f"header cells {meaning[name]!r} and {cell.strip()!r} both mean {name}; "
                                     "keep one of them")
            meaning[name] = cell.strip()
        return header

    def _row(self, start: int, cells: list[str], lines: range) -> CsvRow:
        if any(cell.strip() for cell in cells[len(self.columns):]):  # never cut what a stray delimiter shifted
            return CsvRow(start, {}, broken=f"line {start} has {len(cells)} cells, the header has "
                                            f"{len(self.columns)} (an unquoted {self.delimiter!r} in a cell?)")
        bad = any(line in self._bad_lines for line in lines)
        return CsvRow(start, dict(zip(self.columns, cells, strict=False)), undecodable=bad)

    def rows(self) -> Iterator[CsvRow]:
        raws = self._raw_lines()
        self.columns = [canonical_column(h) for h in self._header(next(raws, None))]
        reader = csv.reader(self._lines(raws), delimiter=self.delimiter)
        start = 2
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a field over csv.field_size_limit(): reject, go on
                yield CsvRow(start, {}, broken=str(error))
                start = self._physical_line + 1
                continue
            end = self._physical_line
            lines = range(start, end + 1)
            long = next((line for line in lines if line in self._long_lines), None)
            if long is not None:
                yield CsvRow(start, {}, broken=f"line {long} is longer than {self._max_line_bytes} bytes; "
                                               "it was skipped")
            elif any(cell.strip() for cell in cells):  # a blank line (or delimiters only) is no row
                yield self._row(start, cells, lines)
            self._bad_lines.difference_update(lines)
            self._long_lines.difference_update(lines)
            start = end + 1


@dataclass
class ImportReport:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    encoding: str = ""


class RejectsFile:
    """Rejected rows as CSV: line, code, path, reason — written as they happen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(["line", "code", "path", "reason"])

    def write(self, problem: Problem) -> None:
        self._writer.writerow([problem.index, problem.code, problem.path, problem.reason])

    def close(self) -> None:
        self._file.close()


async def import_csv(service: IngestService, vendor: Vendor, path: Path, *, rejects: RejectsFile,
                     batch_size: int = 500, mapper: RowMapper = RowMapper(),
                     on_progress: Callable[[int], None] = lambda _: None) -> ImportReport:
    """Import one export; each batch is published all or nothing, bad rows go to ``rejects``.

    ``on_progress`` gets the bytes read so far after each batch.
    """
    report = ImportReport()
    with path.open("rb", buffering=SNIFF_BYTES) as stream:
        export = CsvExport(stream)
        report.encoding = export.encoding
        batch: list[tuple[int, object]] = []

        async def flush() -> None:
            receipts, problems = await service.import_batch(vendor, batch)  # counts its refusals itself
            report.accepted += sum(not r.duplicate for r in receipts)
            report.duplicates += sum(r.duplicate for r in receipts)
            for problem in problems:
                rejects.write(problem)
            report.rejected += len(problems)
            batch.clear()
            on_progress(export.bytes_read)

        def reject(problem: Problem) -> None:
            """A row refused before it reached the ingest service: counted like the ones it refuses."""
            rejects.write(problem)
            report.rejected += 1
            metrics.event_rejected(problem.code)

        for row in export.rows():
            report.rows += 1
            if row.undecodable or row.broken:
                reject(Problem(row.line, "/", row.broken or f"the line is not valid {export.encoding}"))
                continue
            try:
                batch.append((row.line, mapper.event(row.cells)))
            except InvalidContent as fault:
                reject(Problem(row.line, str(fault.details.get("path", "/")), fault.description))
                continue
            if len(batch) >= batch_size:
                await flush()
        if batch:
            await flush()
        on_progress(export.bytes_read)
    log.info("import.csv_done", vendor_id=vendor.vendor_id, file=str(path), rows=report.rows,
             accepted=report.accepted, duplicates=report.duplicates, rejected=report.rejected,
             encoding=report.encoding)
    return report
