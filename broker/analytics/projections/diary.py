"""The e-diary projection: what a parent sees — current marks, attendance, homework, term grades.

Each source record is one row that remembers the version in force, so
applying an event twice or a lower version late changes nothing; grades
take their mark from the newest posting, correction or retraction that
refers to them, so corrections are applied and retracted grades disappear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import asyncpg

from broker.domain import model


def _text(value: object) -> str:
    """Enum members and plain values alike as their wire text."""
    return str(getattr(value, "value", value))


def _mark(mark: model.Mark) -> tuple[str, str]:
    return _text(mark.scale), _text(mark.value)


# The incoming change is newer than the one in force. Versions grow per source record, so they order
# the changes of one record only; a change sent as a record of its own (a correction "g-1-fix" at
# version 1 of a grade edited to version 3) is ordered by when it happened in the journal, then by
# when ejx recorded it. A posting never wins over a later version of the grade seen already, so a
# late retry of an old version cannot come back however the changes interleave.
_NEWER = ("(CASE WHEN EXCLUDED.change_record_id = g.change_record_id"
          " THEN (EXCLUDED.version, EXCLUDED.occurred_at, EXCLUDED.changed_at)"
          " > (g.version, g.occurred_at, g.changed_at)"
          " ELSE (EXCLUDED.occurred_at, EXCLUDED.changed_at) > (g.occurred_at, g.changed_at)"
          " AND NOT coalesce(EXCLUDED.posted_version <= g.posted_version, false) END)")
# A posting newer than the one the row's posting facts come from (corrections carry no posted_version).
_FRESHER_POSTING = ("(EXCLUDED.posted_version IS NOT NULL"
                    " AND (g.posted_version IS NULL OR EXCLUDED.posted_version > g.posted_version))")
# Taken from the newest change of the grade (a posting, correction or retraction); the mark too,
# unless that change is a retraction.
_CHANGE_COLUMNS = ("change_record_id", "version", "occurred_at", "changed_at", "retracted", "corrected",
                   "change_reason")
# Taken from the newest posting, whatever corrections came in between.
_POSTING_COLUMNS = ("posted_version", "posted_at", "school_id", "academic_year", "student_id", "class_unit",
                    "subject_code", "teacher_id", "lesson_id", "lesson_date", "work_type", "weight",
                    "counts_in_average", "term_id", "comment")


def _take_if(condition: str, columns: tuple[str, ...]) -> str:
    return ",\n".join(f"{c} = CASE WHEN {condition} THEN EXCLUDED.{c} ELSE g.{c} END" for c in columns)


# One statement for postings, corrections and retractions, so that the changes of one grade
# are applied in the order they were consumed (executemany keeps that order).
# A posting carries posted_version = its version and its posting facts; a correction or
# retraction carries NULL there and leaves the posting facts alone. The mark in force is
# taken from the newest change; a retraction keeps the mark it replaces (or '' when the
# grade has not arrived yet) and only marks the grade retracted.
_UPSERT_GRADE = f"""
    INSERT INTO diary_grades AS g (
        source_system, grade_record_id, version, occurred_at, school_id, mark_scale, mark_value, changed_at,
        retracted, corrected, change_reason, posted_version, posted_at, academic_year, student_id, class_unit,
        subject_code, teacher_id, lesson_id, lesson_date, work_type, weight, counts_in_average, term_id, comment,
        change_record_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
            $23, $24, $25, $26)
    ON CONFLICT (source_system, grade_record_id) DO UPDATE SET
    {_take_if(_NEWER, _CHANGE_COLUMNS)},
    {_take_if(_NEWER + " AND NOT EXCLUDED.retracted", ("mark_scale", "mark_value"))},
    {_take_if(_FRESHER_POSTING, _POSTING_COLUMNS)}"""
_NO_POSTING = (None,) * 14


def _grade_row(event: model.GradePosted | model.GradeCorrected | model.GradeRetracted) -> tuple[object, ...]:
    """The arguments of :data:`_UPSERT_GRADE` for one posting, correction or retraction."""
    if isinstance(event, model.GradePosted):
        scale, value = _mark(event.mark)
        return (event.source_system, event.source_record_id, int(event.version), event.occurred_at,
                event.school_id, scale, value, event.recorded_at, False, False, None, int(event.version),
                event.recorded_at, event.academic_year, event.student_id, event.class_unit, event.subject_code,
                event.teacher_id, event.lesson_id, event.lesson_date, event.work_type, Decimal(str(event.weight)),
                bool(event.counts_in_average), event.term_id, event.comment, event.source_record_id)
    # A correction (new mark) or a retraction (tombstone) of the grade named by ``grade_ref``. If the
    # grade itself has not arrived yet, a row without posting facts keeps the change; statistics and
    # the diary ignore it until the posting lands.
    retracted = isinstance(event, model.GradeRetracted)
    scale, value = ("", "") if retracted else _mark(event.mark)
    return (event.source_system, event.grade_ref, int(event.version), event.occurred_at, event.school_id,
            scale, value, event.recorded_at, retracted, not retracted, event.reason, *_NO_POSTING,
            event.source_record_id)


_UPSERT_ATTENDANCE = """
    INSERT INTO diary_attendance AS a (source_system, source_record_id, version, school_id, student_id,
                                       lesson_id, day, status, minutes_late)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (source_system, source_record_id) DO UPDATE SET
        version = EXCLUDED.version, school_id = EXCLUDED.school_id, student_id = EXCLUDED.student_id,
        lesson_id = EXCLUDED.lesson_id, day = EXCLUDED.day, status = EXCLUDED.status,
        minutes_late = EXCLUDED.minutes_late
    WHERE EXCLUDED.version > a.version"""


def _attendance_row(event: model.AttendanceMarked) -> tuple[object, ...]:
    return (event.source_system, event.source_record_id, int(event.version), event.school_id, event.student_id,
            event.lesson_id, event.date, _text(event.status), event.minutes_late)


_UPSERT_HOMEWORK = """
    INSERT INTO diary_homework AS h (source_system, source_record_id, version, school_id, class_unit,
                                     subject_code, teacher_id, lesson_date, due_date, text, academic_year)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (source_system, source_record_id) DO UPDATE SET
        version = EXCLUDED.version, school_id = EXCLUDED.school_id, class_unit = EXCLUDED.class_unit,
        subject_code = EXCLUDED.subject_code, teacher_id = EXCLUDED.teacher_id,
        lesson_date = EXCLUDED.lesson_date, due_date = EXCLUDED.due_date, text = EXCLUDED.text,
        academic_year = EXCLUDED.academic_year
    WHERE EXCLUDED.version > h.version"""


def _homework_row(event: model.HomeworkAssigned) -> tuple[object, ...]:
    return (event.source_system, event.source_record_id, int(event.version), event.school_id, event.class_unit,
            event.subject_code, event.teacher_id, event.lesson_date, event.due_date, event.text,
            event.academic_year)


_UPSERT_TERM_GRADE = """
    INSERT INTO diary_term_grades AS t (source_system, source_record_id, version, school_id, academic_year,
                                        student_id, subject_code, term_id, period, mark_scale, mark_value,
                                        recorded_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT (source_system, source_record_id) DO UPDATE SET
        version = EXCLUDED.version, school_id = EXCLUDED.school_id,
        academic_year = EXCLUDED.academic_year, student_id = EXCLUDED.student_id,
        subject_code = EXCLUDED.subject_code, term_id = EXCLUDED.term_id, period = EXCLUDED.period,
        mark_scale = EXCLUDED.mark_scale, mark_value = EXCLUDED.mark_value,
        recorded_at = EXCLUDED.recorded_at
    WHERE EXCLUDED.version > t.version"""


def _term_grade_row(event: model.TermGradeFinalized) -> tuple[object, ...]:
    scale, value = _mark(event.mark)
    return (event.source_system, event.source_record_id, int(event.version), event.school_id, event.academic_year,
            event.student_id, event.subject_code, event.term_id, _text(event.period), scale, value,
            event.recorded_at)


# Event type → (statement, row builder); each statement runs once per event, in the order given.
_STATEMENTS: dict[type[model.Event], tuple[str, Callable[..., tuple[object, ...]]]] = {
    model.GradePosted: (_UPSERT_GRADE, _grade_row),
    model.GradeCorrected: (_UPSERT_GRADE, _grade_row),
    model.GradeRetracted: (_UPSERT_GRADE, _grade_row),
    model.AttendanceMarked: (_UPSERT_ATTENDANCE, _attendance_row),
    model.HomeworkAssigned: (_UPSERT_HOMEWORK, _homework_row),
    model.TermGradeFinalized: (_UPSERT_TERM_GRADE, _term_grade_row),
}


def handles(event: model.Event) -> bool:
    """Does the diary have a projection for this kind of event?"""
    return type(event) in _STATEMENTS


async def apply_events(conn: asyncpg.Connection, events: Sequence[model.Event]) -> None:
    """Write the events into the diary tables, in the order given, one round trip per table.

    Rows of different tables are independent; within a table ``executemany``
    applies them one after another, so the result is that of applying the
    events one by one (a lower version after a higher one changes nothing).
    Rows are locked in one order whatever the batch: tables in :data:`_TABLE_ORDER`, and
    within a table by record key (a stable sort, so one record's changes keep their order).
    Two analytics processes applying overlapping records after a rebalance then wait for
    each other instead of deadlocking.
    """
    rows: dict[str, list[tuple[object, ...]]] = {}
    for event in events:
        statement, row = _STATEMENTS[type(event)]
        rows.setdefault(statement, []).append(row(event))
    for statement in _TABLE_ORDER:
        if statement in rows:
            await conn.executemany(statement, sorted(rows[statement], key=_record_key))


_TABLE_ORDER = tuple(dict.fromkeys(statement for statement, _ in _STATEMENTS.values()))
"""Each table's statement once, in one fixed order: the order its rows are locked in."""


def _record_key(row: tuple[object, ...]) -> tuple[object, ...]:
    """(source_system, record id): every row builder puts the table's conflict key first."""
    return row[:2]


@dataclass(frozen=True)
class DiaryPeriod:
    """Which days of a diary are read; None leaves that end open."""

    date_from: date | None = None
    date_to: date | None = None


class DiaryReader:
    """One student's e-diary from the projection (the access log is the caller's concern)."""

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = pool

    async def diary(self, student_id: str, period: DiaryPeriod = DiaryPeriod(), *,
                    subject_code: str | None = None) -> dict[str, object]:
        """Marks, attendance, homework and term grades; ``subject_code`` narrows them to one subject, and
        leaves attendance out: it names lessons, not subjects."""
        span = (period.date_from, period.date_to)
        grades = await self._db.fetch(
            """SELECT school_id, grade_record_id, subject_code, class_unit, term_id, lesson_id, lesson_date,
                      work_type, weight, counts_in_average, mark_scale, mark_value, corrected, change_reason,
                      teacher_id, comment
                 FROM diary_grades
                WHERE student_id = $1 AND NOT retracted AND posted_version IS NOT NULL
                  AND ($2::date IS NULL OR lesson_date >= $2) AND ($3::date IS NULL OR lesson_date <= $3)
                  AND ($4::text IS NULL OR subject_code = $4)
                ORDER BY lesson_date, subject_code, grade_record_id""", student_id, *span, subject_code)
        attendance = [] if subject_code is not None else await self._db.fetch(
            """SELECT school_id, lesson_id, day, status, minutes_late FROM diary_attendance
                WHERE student_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3)
                ORDER BY day, lesson_id""", student_id, *span)
        # The student's classes are known from their grades (events name no class roster): the classes of
        # their grades in force, in the same academic year (class names such as 7Б come back every year; a
        # grade retracted as given to the wrong pupil names no class of theirs).
        homework = await self._db.fetch(
            """SELECT h.school_id, h.class_unit, h.subject_code, h.lesson_date, h.due_date, h.text
                 FROM diary_homework h
                WHERE (h.school_id, h.class_unit) IN (
                          SELECT school_id, class_unit FROM diary_grades
                           WHERE student_id = $1 AND NOT retracted AND posted_version IS NOT NULL)
                  AND (h.academic_year IS NULL OR (h.school_id, h.class_unit, h.academic_year) IN (
                          SELECT school_id, class_unit, academic_year FROM diary_grades
                           WHERE student_id = $1 AND NOT retracted AND posted_version IS NOT NULL))
                  AND ($2::date IS NULL OR h.due_date >= $2) AND ($3::date IS NULL OR h.lesson_date <= $3)
                  AND ($4::text IS NULL OR h.subject_code = $4)
                ORDER BY h.lesson_date, h.subject_code, h.source_record_id""", student_id, *span, subject_code)
        # Term grades of the academic years (1 September to 31 August) the period touches.
        terms = await self._db.fetch(
            """SELECT school_id, academic_year, subject_code, term_id, period, mark_scale, mark_value
                 FROM diary_term_grades WHERE student_id = $1 AND ($2::text IS NULL OR subject_code = $2)
                  AND ($3::date IS NULL OR academic_year IS NULL
                       OR make_date(split_part(academic_year, '-', 2)::int, 8, 31) >= $3)
                  AND ($4::date IS NULL OR academic_year IS NULL
                       OR make_date(split_part(academic_year, '-', 1)::int, 9, 1) <= $4)
                ORDER BY academic_year, term_id, subject_code""", student_id, subject_code, *span)
        return {
            "student_id": student_id,
            "from": _iso(period.date_from), "to": _iso(period.date_to),
            "grades": [{
                "grade_id": r["grade_record_id"], "school_id": r["school_id"], "subject_code": r["subject_code"],
                "class_unit": r["class_unit"], "term_id": r["term_id"], "lesson_id": r["lesson_id"],
                "lesson_date": _iso(r["lesson_date"]), "work_type": r["work_type"],
                "weight": float(r["weight"]), "counts_in_average": r["counts_in_average"],
                "mark": {"scale": r["mark_scale"], "value": r["mark_value"]},
                "corrected": r["corrected"], "correction_reason": r["change_reason"],
                "teacher_id": r["teacher_id"], "comment": r["comment"]} for r in grades],
            "attendance": [{
                "school_id": r["school_id"], "lesson_id": r["lesson_id"], "date": _iso(r["day"]),
                "status": r["status"], "minutes_late": r["minutes_late"]} for r in attendance],
            "homework": [{
                "school_id": r["school_id"], "class_unit": r["class_unit"], "subject_code": r["subject_code"],
                "lesson_date": _iso(r["lesson_date"]), "due_date": _iso(r["due_date"]), "text": r["text"]}
                for r in homework],
            "term_grades": [{
                "school_id": r["school_id"], "academic_year": r["academic_year"], "subject_code": r["subject_code"],
                "term_id": r["term_id"], "period": r["period"],
                "mark": {"scale": r["mark_scale"], "value": r["mark_value"]}} for r in terms],
        }


def is_empty(diary: dict[str, object]) -> bool:
    """Nothing to show: an unknown pupil, or nothing in the range (over SMEV 3 that is NO_DATA)."""
    return not any(diary[part] for part in ("grades", "attendance", "homework", "term_grades"))


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None
