"""The e-diary projection: what a parent sees — current marks, attendance, homework, term grades.

Each source record is one row that remembers the version in force, so
applying an event twice or a lower version late changes nothing; grades
take their mark from the newest posting, correction or retraction that
refers to them, so corrections are applied and retracted grades disappear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import asyncpg

from broker import model


def _text(value: object) -> str:
    """Enum members and plain values alike as their wire text."""
    return str(getattr(value, "value", value))


def _mark(mark: model.Mark) -> tuple[str, str]:
    return _text(mark.scale), _text(mark.value)


# The incoming change is newer than the one in force (see the migration's note on order).
_NEWER = "((EXCLUDED.version, EXCLUDED.occurred_at, EXCLUDED.changed_at) > (g.version, g.occurred_at, g.changed_at))"
_FRESHER_POSTING = "(g.posted_version IS NULL OR EXCLUDED.posted_version > g.posted_version)"
# Taken from a posting only when it is the newest change of the grade.
_MARK_COLUMNS = ("version", "occurred_at", "mark_scale", "mark_value", "changed_at", "retracted", "corrected",
                 "change_reason")
# Taken from the newest posting, whatever corrections came in between.
_POSTING_COLUMNS = ("posted_version", "posted_at", "school_id", "academic_year", "student_id", "class_unit",
                    "subject_code", "teacher_id", "lesson_id", "lesson_date", "work_type", "weight",
                    "counts_in_average", "term_id", "comment")


def _take_if(condition: str, columns: tuple[str, ...]) -> str:
    return ",\n".join(f"{c} = CASE WHEN {condition} THEN EXCLUDED.{c} ELSE g.{c} END" for c in columns)


_UPSERT_POSTING = f"""
    INSERT INTO diary_grades AS g (
        source_system, grade_record_id, version, occurred_at, school_id, mark_scale, mark_value, changed_at,
        retracted, corrected, change_reason, posted_version, posted_at, academic_year, student_id, class_unit,
        subject_code, teacher_id, lesson_id, lesson_date, work_type, weight, counts_in_average, term_id, comment)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false, false, NULL, $3, $8, $9, $10, $11, $12, $13, $14, $15, $16,
            $17, $18, $19, $20)
    ON CONFLICT (source_system, grade_record_id) DO UPDATE SET
    {_take_if(_NEWER, _MARK_COLUMNS)},
    {_take_if(_FRESHER_POSTING, _POSTING_COLUMNS)}"""


async def apply_grade_posted(conn: asyncpg.Connection, event: model.GradePosted) -> None:
    scale, value = _mark(event.mark)
    await conn.execute(
        _UPSERT_POSTING,
        event.source_system, event.source_record_id, int(event.version), event.occurred_at, event.school_id,
        scale, value, event.recorded_at, event.academic_year, event.student_id, event.class_unit,
        event.subject_code, event.teacher_id, event.lesson_id, event.lesson_date, event.work_type,
        Decimal(str(event.weight)), bool(event.counts_in_average), event.term_id, event.comment)


async def apply_grade_changed(conn: asyncpg.Connection, event: model.GradeCorrected | model.GradeRetracted) -> None:
    """A correction (new mark) or a retraction (tombstone) of the grade named by ``grade_ref``.

    If the grade itself has not arrived yet, a row without posting facts keeps
    the change; statistics and the diary ignore it until the posting lands.
    """
    retracted = isinstance(event, model.GradeRetracted)
    scale, value = ("", "") if retracted else _mark(event.mark)
    await conn.execute(
        """INSERT INTO diary_grades AS g (
               source_system, grade_record_id, version, occurred_at, school_id, mark_scale, mark_value,
               retracted, corrected, change_reason, changed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NOT $8, $9, $10)
           ON CONFLICT (source_system, grade_record_id) DO UPDATE SET
               version = EXCLUDED.version, occurred_at = EXCLUDED.occurred_at, changed_at = EXCLUDED.changed_at,
               retracted = EXCLUDED.retracted, corrected = EXCLUDED.corrected,
               change_reason = EXCLUDED.change_reason,
               mark_scale = CASE WHEN EXCLUDED.retracted THEN g.mark_scale ELSE EXCLUDED.mark_scale END,
               mark_value = CASE WHEN EXCLUDED.retracted THEN g.mark_value ELSE EXCLUDED.mark_value END
           WHERE """ + _NEWER,
        event.source_system, event.grade_ref, int(event.version), event.occurred_at, event.school_id,
        scale, value, retracted, event.reason, event.recorded_at)


async def apply_attendance(conn: asyncpg.Connection, event: model.AttendanceMarked) -> None:
    await conn.execute(
        """INSERT INTO diary_attendance AS a (source_system, source_record_id, version, school_id, student_id,
                                              lesson_id, day, status, minutes_late)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (source_system, source_record_id) DO UPDATE SET
               version = EXCLUDED.version, school_id = EXCLUDED.school_id, student_id = EXCLUDED.student_id,
               lesson_id = EXCLUDED.lesson_id, day = EXCLUDED.day, status = EXCLUDED.status,
               minutes_late = EXCLUDED.minutes_late
           WHERE EXCLUDED.version > a.version""",
        event.source_system, event.source_record_id, int(event.version), event.school_id, event.student_id,
        event.lesson_id, event.date, _text(event.status), event.minutes_late)


async def apply_homework(conn: asyncpg.Connection, event: model.HomeworkAssigned) -> None:
    await conn.execute(
        """INSERT INTO diary_homework AS h (source_system, source_record_id, version, school_id, class_unit,
                                            subject_code, teacher_id, lesson_date, due_date, text)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (source_system, source_record_id) DO UPDATE SET
               version = EXCLUDED.version, school_id = EXCLUDED.school_id, class_unit = EXCLUDED.class_unit,
               subject_code = EXCLUDED.subject_code, teacher_id = EXCLUDED.teacher_id,
               lesson_date = EXCLUDED.lesson_date, due_date = EXCLUDED.due_date, text = EXCLUDED.text
           WHERE EXCLUDED.version > h.version""",
        event.source_system, event.source_record_id, int(event.version), event.school_id, event.class_unit,
        event.subject_code, event.teacher_id, event.lesson_date, event.due_date, event.text)


async def apply_term_grade(conn: asyncpg.Connection, event: model.TermGradeFinalized) -> None:
    scale, value = _mark(event.mark)
    await conn.execute(
        """INSERT INTO diary_term_grades AS t (source_system, source_record_id, version, school_id, academic_year,
                                               student_id, subject_code, term_id, period, mark_scale, mark_value,
                                               recorded_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (source_system, source_record_id) DO UPDATE SET
               version = EXCLUDED.version, school_id = EXCLUDED.school_id,
               academic_year = EXCLUDED.academic_year, student_id = EXCLUDED.student_id,
               subject_code = EXCLUDED.subject_code, term_id = EXCLUDED.term_id, period = EXCLUDED.period,
               mark_scale = EXCLUDED.mark_scale, mark_value = EXCLUDED.mark_value,
               recorded_at = EXCLUDED.recorded_at
           WHERE EXCLUDED.version > t.version""",
        event.source_system, event.source_record_id, int(event.version), event.school_id, event.academic_year,
        event.student_id, event.subject_code, event.term_id, _text(event.period), scale, value,
        event.recorded_at)


@dataclass(frozen=True)
class DiaryPeriod:
    """Which days of a diary are read; None leaves that end open."""

    date_from: date | None = None
    date_to: date | None = None


class DiaryReader:
    """One student's e-diary from the projection (the access log is the caller's concern)."""

    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = pool

    async def diary(self, student_id: str, period: DiaryPeriod = DiaryPeriod()) -> dict[str, object]:
        span = (period.date_from, period.date_to)
        grades = await self._db.fetch(
            """SELECT school_id, grade_record_id, subject_code, class_unit, term_id, lesson_id, lesson_date,
                      work_type, weight, counts_in_average, mark_scale, mark_value, corrected, change_reason,
                      teacher_id, comment
                 FROM diary_grades
                WHERE student_id = $1 AND NOT retracted AND posted_version IS NOT NULL
                  AND ($2::date IS NULL OR lesson_date >= $2) AND ($3::date IS NULL OR lesson_date <= $3)
                ORDER BY lesson_date, subject_code, grade_record_id""", student_id, *span)
        attendance = await self._db.fetch(
            """SELECT school_id, lesson_id, day, status, minutes_late FROM diary_attendance
                WHERE student_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3)
                ORDER BY day, lesson_id""", student_id, *span)
        # The student's class units are known from their grades (events name no class roster).
        homework = await self._db.fetch(
            """SELECT h.school_id, h.class_unit, h.subject_code, h.lesson_date, h.due_date, h.text
                 FROM diary_homework h
                WHERE (h.school_id, h.class_unit) IN (
                          SELECT DISTINCT school_id, class_unit FROM diary_grades
                           WHERE student_id = $1 AND class_unit IS NOT NULL)
                  AND ($2::date IS NULL OR h.due_date >= $2) AND ($3::date IS NULL OR h.lesson_date <= $3)
                ORDER BY h.lesson_date, h.subject_code, h.source_record_id""", student_id, *span)
        terms = await self._db.fetch(
            """SELECT school_id, academic_year, subject_code, term_id, period, mark_scale, mark_value
                 FROM diary_term_grades WHERE student_id = $1
                ORDER BY academic_year, term_id, subject_code""", student_id)
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


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None
