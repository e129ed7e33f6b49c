"""Grade statistics: counts, five-point means, mark distributions, pass shares, attendance rates.

The projection keeps one row per grade as the journal shows it now
(``diary_grades``); statistics are computed from it at read time, so a
correction or retraction is reflected at once and no running aggregate can
drift under replays. SQL groups rows by the asked dimensions and mark; the
pure :func:`summarise` turns those counts into statistics.

No figure may identify a pupil. Every grade belongs to one *cell*: district ×
school × subject × class unit × term × calendar month of the lesson
(attendance: school × month). A cell with fewer than ``min_pupils`` distinct
pupils is left out of every figure, and a group missing any cell says so
(``suppressed``). Since every answer is a sum of whole released cells, the
difference of two answers is a sum of released cells too, each of at least
``min_pupils`` pupils: differencing two overlapping queries isolates no pupil.
Date filters therefore select whole months (see :func:`whole_months`).
"""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

import asyncpg

from broker.domain.faults import InvalidContent

FIVE_POINT = "five-point"
PASS_FAIL = "pass-fail"
PASSED = "зач"
FAILED = "незач"
# Attendance statuses that count as being at the lesson.
ATTENDED = frozenset({"present", "late"})
# Distribution labels every report lists, in this order (CSV columns).
FIXED_LABELS = ("5", "4", "3", "2", "1", PASSED, FAILED)


class Dimension(StrEnum):
    """What grade statistics can be grouped by; attendance only by district and school."""

    DISTRICT = "district"
    SCHOOL = "school"
    SUBJECT = "subject"
    CLASS_UNIT = "class_unit"
    TERM = "term"


ALL_DIMENSIONS: tuple[Dimension, ...] = tuple(Dimension)
# Attendance events carry neither subject, class unit nor term.
ATTENDANCE_DIMENSIONS = frozenset({Dimension.DISTRICT, Dimension.SCHOOL})

# The cell of a grade: every dimension plus the month; figures are sums of whole cells.
_GRADE_CELL = {
    Dimension.DISTRICT: "s.district",
    Dimension.SCHOOL: "g.school_id",
    Dimension.SUBJECT: "g.subject_code",
    Dimension.CLASS_UNIT: "g.class_unit",
    Dimension.TERM: "g.term_id",
}
_ATTENDANCE_CELL = {Dimension.DISTRICT: "s.district", Dimension.SCHOOL: "a.school_id"}


def five_point(scale: str, value: str) -> int | None:
    """The numeric mark on the five-point scale, or None (другая шкала, «н/а», «осв»)."""
    if scale != FIVE_POINT or value not in {"1", "2", "3", "4", "5"}:
        return None
    return int(value)


def distribution_label(scale: str, value: str) -> str:
    """Five-point and pass-fail marks by value ("5", "зач"); others with their scale ("ten:9")."""
    return value if scale in (FIVE_POINT, PASS_FAIL) else f"{scale}:{value}"


def parse_dimensions(text: str | None) -> tuple[Dimension, ...]:
    """``"district,subject"`` → dimensions in a fixed order; empty or None means all of them."""
    if not text:
        return ALL_DIMENSIONS
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in Dimension.__members__.values()]
    if unknown:
        raise InvalidContent(f"unknown group_by dimension(s) {', '.join(unknown)}; "
                             f"use {', '.join(ALL_DIMENSIONS)}")
    return tuple(d for d in ALL_DIMENSIONS if d.value in names)


@dataclass(frozen=True)
class MarkCount:
    """How many current grades of one group carry one mark."""

    key: tuple[str | None, ...]
    scale: str
    value: str
    count: int


@dataclass(frozen=True)
class AttendanceCount:
    key: tuple[str | None, ...]
    status: str
    count: int


@dataclass(frozen=True)
class GradeGroup:
    """Statistics of one group (e.g. one school × subject × class unit × term)."""

    key: dict[str, str | None]
    count: int
    """Current grades of every scale (corrections applied, retracted ones removed)."""
    mean_five_point: float | None
    """Plain mean of numeric five-point marks; None if the group has none."""
    distribution: dict[str, int]
    """Marks by :func:`distribution_label`, e.g. {"5": 3, "зач": 2, "ten:9": 1}."""
    passed: int
    """Pass-fail marks «зач»."""
    failed: int
    """Pass-fail marks «незач»."""
    pass_share: float | None
    """passed / (passed + failed); None without pass-fail marks."""
    attendance_marks: int | None = None
    """Attendance marks of the group; None when the grouping is finer than a school."""
    attendance_rate: float | None = None
    """Share of attendance marks that are present or late."""
    suppressed: bool = False
    """Some (or, with count 0, all) of the group's marks are left out: cells of too few pupils."""

    def as_dict(self) -> dict[str, object]:
        return {**self.key, "count": self.count, "mean_five_point": self.mean_five_point,
                "distribution": dict(self.distribution), "passed": self.passed, "failed": self.failed,
                "pass_share": self.pass_share, "attendance_marks": self.attendance_marks,
                "attendance_rate": self.attendance_rate, "suppressed": self.suppressed}


@dataclass
class _Tally:
    count: int = 0
    points: int = 0
    numeric: int = 0
    passed: int = 0
    failed: int = 0
    distribution: dict[str, int] = field(default_factory=dict)


def summarise(dimensions: Sequence[Dimension], marks: Iterable[MarkCount],
              attendance: Iterable[AttendanceCount] | None = None,
              suppressed: Iterable[tuple[str | None, ...]] = ()) -> list[GradeGroup]:
    """Statistics per group, sorted by key; attendance joins in only for district/school groupings.

    ``attendance`` None means it does not apply (e.g. a subject was asked for).
    ``suppressed``: keys of groups some of whose cells were left out (they appear even if empty).

    A group with attendance marks but no grades still appears (count 0), so a
    school that only marks attendance is not hidden.
    """
    tallies: dict[tuple[str | None, ...], _Tally] = {}
    for mark in marks:
        tally = tallies.setdefault(mark.key, _Tally())
        tally.count += mark.count
        label = distribution_label(mark.scale, mark.value)
        tally.distribution[label] = tally.distribution.get(label, 0) + mark.count
        points = five_point(mark.scale, mark.value)
        if points is not None:
            tally.points += points * mark.count
            tally.numeric += mark.count
        elif mark.scale == PASS_FAIL and mark.value == PASSED:
            tally.passed += mark.count
        elif mark.scale == PASS_FAIL and mark.value == FAILED:
            tally.failed += mark.count
    with_attendance = attendance is not None and set(dimensions) <= ATTENDANCE_DIMENSIONS
    present: dict[tuple[str | None, ...], list[int]] = {}
    if with_attendance:
        for row in attendance or ():
            counts = present.setdefault(row.key, [0, 0])
            counts[0] += row.count
            counts[1] += row.count if row.status in ATTENDED else 0
            tallies.setdefault(row.key, _Tally())
    hidden = set(suppressed)
    for key in hidden:
        tallies.setdefault(key, _Tally())
    groups = []
    for key in sorted(tallies, key=lambda k: tuple("" if v is None else v for v in k)):
        t = tallies[key]
        decided = t.passed + t.failed
        total, attended = present.get(key, (0, 0))
        groups.append(GradeGroup(
            key={d.value: v for d, v in zip(dimensions, key, strict=True)},
            count=t.count,
            mean_five_point=round(t.points / t.numeric, 4) if t.numeric else None,
            distribution=dict(sorted(t.distribution.items(), key=lambda item: _mark_order(item[0]))),
            passed=t.passed, failed=t.failed,
            pass_share=round(t.passed / decided, 4) if decided else None,
            attendance_marks=total if with_attendance else None,
            attendance_rate=round(attended / total, 4) if with_attendance and total else None,
            suppressed=key in hidden))
    return groups


def _mark_order(value: str) -> tuple[int, str]:
    """5, 4, 3, 2, 1 first, then зач, незач, then marks of other scales."""
    fixed = list(FIXED_LABELS)
    return (fixed.index(value), "") if value in fixed else (len(fixed), value)


def whole_months(date_from: date | None, date_to: date | None) -> tuple[date | None, date | None]:
    """The period widened to whole calendar months, so a date filter selects whole cells."""
    first = date_from.replace(day=1) if date_from is not None else None
    last = (date_to.replace(day=calendar.monthrange(date_to.year, date_to.month)[1])
            if date_to is not None else None)
    return first, last


@dataclass(frozen=True)
class GradeFilter:
    """Which grades a statistics request covers; None means no restriction."""

    districts: tuple[str, ...] | None = None
    """Districts covered (an authority's scope, or the one asked for)."""
    school_id: str | None = None
    subject_code: str | None = None
    date_from: date | None = None
    """First lesson date (and attendance date) included."""
    date_to: date | None = None
    """Last lesson date (and attendance date) included."""


class GradeStatistics:
    """Reads grade statistics from the projection, leaving out cells of fewer than ``min_pupils``."""

    def __init__(self, pool: asyncpg.Pool, *, min_pupils: int = 1) -> None:
        self._pool = pool
        self._min_pupils = min_pupils

    async def groups(self, dimensions: Sequence[Dimension], where: GradeFilter) -> list[GradeGroup]:
        dims = tuple(dimensions) or ALL_DIMENSIONS
        conditions, args = _conditions(where, school="g.school_id", day="g.lesson_date",
                                       subject="g.subject_code")
        cell = {d: _GRADE_CELL[d] for d in ALL_DIMENSIONS}
        rows = await self._pool.fetch(_released_sql(
            cell, dims, month="g.lesson_date", extra="g.mark_scale, g.mark_value",
            source="diary_grades g LEFT JOIN schools s ON s.school_id = g.school_id",
            where=f"NOT g.retracted AND g.posted_version IS NOT NULL {conditions}"), *args, self._min_pupils)
        marks = [MarkCount(_key(row, dims), row["mark_scale"], row["mark_value"], row["released"])
                 for row in rows if row["released"]]
        hidden = {_key(row, dims) for row in rows if row["hidden"]}
        attendance: list[AttendanceCount] | None = None
        if set(dims) <= ATTENDANCE_DIMENSIONS and where.subject_code is None:
            conditions, args = _conditions(where, school="a.school_id", day="a.day", subject=None)
            rows = await self._pool.fetch(_released_sql(
                _ATTENDANCE_CELL, dims, month="a.day", extra="a.status",
                source="diary_attendance a LEFT JOIN schools s ON s.school_id = a.school_id",
                where=f"true {conditions}"), *args, self._min_pupils)
            attendance = [AttendanceCount(_key(row, dims), row["status"], row["released"])
                          for row in rows if row["released"]]
            hidden |= {_key(row, dims) for row in rows if row["hidden"]}
        # A region grouped by every dimension is ~10⁵ groups, about a second of Python: not on the event loop.
        return await asyncio.to_thread(summarise, dims, marks, attendance, hidden)


def _key(row: asyncpg.Record, dims: Sequence[Dimension]) -> tuple[str | None, ...]:
    return tuple(row[d.value] for d in dims)


def _released_sql(cell: dict[Dimension, str], dims: Sequence[Dimension], *, month: str, extra: str,
                  source: str, where: str) -> str:
    """Counts per asked key and ``extra`` columns, split into released and hidden by cell size.

    The minimum number of pupils is the query's last parameter.
    """
    names = [d.value for d in cell]
    columns = ", ".join(f"{expr} AS {d.value}" for d, expr in cell.items())
    extras = [part.strip().split(".")[-1] for part in extra.split(",")]
    same_cell = " AND ".join(f"c.{n} IS NOT DISTINCT FROM r.{n}" for n in [*names, "month"])
    key = ", ".join([*(f"r.{d.value}" for d in dims), *(f"r.{e}" for e in extras)])
    minimum = where.count("$") + 1
    return f"""WITH r AS (SELECT {columns}, date_trunc('month', {month}) AS month, student_id, {extra}
                          FROM {source} WHERE {where}),
                     c AS (SELECT {", ".join(names)}, month, count(DISTINCT student_id) >= ${minimum} AS released
                             FROM r GROUP BY {", ".join(names)}, month)
                SELECT {key}, count(*) FILTER (WHERE c.released) AS released,
                       count(*) FILTER (WHERE NOT c.released) AS hidden
                  FROM r JOIN c ON {same_cell}
                 GROUP BY {key}"""


def _conditions(where: GradeFilter, *, school: str, day: str, subject: str | None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []

    def add(template: str, value: object) -> None:
        args.append(value)
        clauses.append(template.format(f"${len(args)}"))

    if where.districts is not None:
        add("s.district = ANY({}::text[])", list(where.districts))
    if where.school_id is not None:
        add(f"{school} = {{}}", where.school_id)
    if where.subject_code is not None and subject is not None:
        add(f"{subject} = {{}}", where.subject_code)
    if where.date_from is not None:
        add(f"{day} >= {{}}", where.date_from)
    if where.date_to is not None:
        add(f"{day} <= {{}}", where.date_to)
    return "".join(f" AND {c}" for c in clauses), args
