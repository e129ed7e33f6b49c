"""A simulated school day: vendors, schools, classes and the events their journals would emit.

Deterministic for a seed, so the demo's report can be checked against what was
generated. Marks follow a typical Russian distribution (mostly 4s and 5s),
attendance has «н», some grades are corrected or retracted, and the last day
closes the quarter with term grades (incl. «осв» and «н/а»). Pure: no I/O.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from broker.domain.model import (
    AttendanceMarked,
    AttendanceStatus,
    Event,
    GradeCorrected,
    GradePosted,
    GradeRetracted,
    HomeworkAssigned,
    Mark,
    MarkScale,
    TermGradeFinalized,
    TermPeriod,
    event_to_dict,
)

MSK = timezone(timedelta(hours=3))
ACADEMIC_YEAR = "2026-2027"
TERM_ID = "2026-2027-q2"
SUBJECTS = ("MATH", "RUS", "LIT", "PHYS", "HIST", "ENG")
CLASS_UNITS = {"5А": "5a", "7Б": "7b", "9В": "9v"}
"""Class units and their ASCII spelling for record ids."""
LESSONS_PER_DAY = 4
FIVE_POINT_WEIGHTS = {"5": 30, "4": 40, "3": 22, "2": 7, "1": 1}
ATTENDANCE_WEIGHTS = {AttendanceStatus.PRESENT: 90, AttendanceStatus.ABSENT: 4, AttendanceStatus.LATE: 3,
                      AttendanceStatus.ILL: 2, AttendanceStatus.EXCUSED: 1}
WORK_TYPES = ("Ответ на уроке", "Самостоятельная работа", "Контрольная работа", "Домашняя работа")
DISTRICTS = ("Центральный", "Северный", "Южный")
CHANNELS = ("rest", "csv", "oneroster")
"""How each simulated vendor submits: the three adapters, in turn."""


@dataclass(frozen=True)
class SimulatedSchool:
    school_id: str
    name: str
    district: str
    vendor: str
    silent: bool = False
    """Registered but never sends anything: must show as never connected."""


@dataclass(frozen=True)
class SimulatedVendor:
    name: str
    channel: str


@dataclass(frozen=True)
class BadSubmission:
    """Something a vendor sends that ejx must refuse, and the fault code it must get."""

    vendor: str
    payload: dict[str, object]
    expected_code: str
    why: str


@dataclass
class SchoolDay:
    """Everything the demo submits, and what it must therefore see at the far end."""

    vendors: list[SimulatedVendor]
    schools: list[SimulatedSchool]
    events: dict[str, list[Event]] = field(default_factory=dict)
    """Valid events per vendor, in journal order."""
    rejected: list[BadSubmission] = field(default_factory=list)

    @property
    def valid_count(self) -> int:
        return sum(len(events) for events in self.events.values())


def simulate(*, schools: int = 6, students_per_school: int = 30, days: int = 1, seed: int = 7,
             first_day: date = date(2026, 12, 7)) -> SchoolDay:
    """Generate ``days`` school days for ``schools`` schools spread over three vendors."""
    rng = random.Random(seed)
    vendors = [SimulatedVendor(name=f"vendor-{channel}", channel=channel) for channel in CHANNELS]
    day = SchoolDay(vendors=vendors, schools=[])
    for number in range(schools + 1):
        vendor = vendors[number % len(vendors)]
        day.schools.append(SimulatedSchool(
            school_id=f"sch-{number + 1:04d}", name=f"Школа № {number + 1}",
            district=DISTRICTS[number % len(DISTRICTS)], vendor=vendor.name, silent=number == schools))
    for school in day.schools:
        if not school.silent:
            day.events.setdefault(school.vendor, []).extend(
                _school_events(rng, school, students_per_school, days, first_day))
    day.rejected.extend(_bad_submissions(rng, day))
    return day


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _pseudonym(rng: random.Random, prefix: str) -> str:
    letters = "abcdefghjkmnpqrstuvwxyz"
    digits = "23456789"
    return prefix + "-" + "".join(rng.choice(letters) for _ in range(4)) + "".join(
        rng.choice(digits) for _ in range(4))


def _pick(rng: random.Random, weights: dict) -> object:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _school_events(rng: random.Random, school: SimulatedSchool, students: int, days: int,
                   first_day: date) -> Iterator[Event]:
    classes = {unit: [_pseudonym(rng, "st") for _ in range(students // len(CLASS_UNITS) or 1)]
               for unit in CLASS_UNITS}
    teachers = {subject: _pseudonym(rng, "tc") for subject in SUBJECTS}
    record = 0

    def header(occurred: datetime, *, version: int = 1, record_id: str | None = None,
               actor: str) -> dict[str, object]:
        nonlocal record
        record += 1
        delay = timedelta(minutes=rng.randint(1, 90))
        return dict(event_id=_uuid(rng), source_system=school.vendor,
                    source_record_id=record_id or f"{school.school_id}-r{record}", version=version,
                    occurred_at=occurred, recorded_at=occurred + delay, school_id=school.school_id,
                    academic_year=ACADEMIC_YEAR, actor_id=actor)

    for offset in range(days):
        lesson_date = first_day + timedelta(days=offset)
        for unit, pupils in classes.items():
            for slot in range(LESSONS_PER_DAY):
                subject = SUBJECTS[(slot + offset + list(CLASS_UNITS).index(unit)) % len(SUBJECTS)]
                teacher = teachers[subject]
                lesson_id = f"{school.school_id}-{CLASS_UNITS[unit]}-{lesson_date:%m%d}-{slot + 1}"
                start = datetime.combine(lesson_date, time(8 + slot, 30), MSK)
                for pupil in pupils:
                    status = _pick(rng, ATTENDANCE_WEIGHTS)
                    yield AttendanceMarked(**header(start, actor=teacher), student_id=pupil, lesson_id=lesson_id,
                                           date=lesson_date, status=status,
                                           minutes_late=rng.randint(3, 20) if status is AttendanceStatus.LATE else None)
                    if status in (AttendanceStatus.PRESENT, AttendanceStatus.LATE) and rng.random() < 0.3:
                        yield from _grade_with_history(rng, header, start + timedelta(minutes=40), pupil, unit,
                                                       subject, teacher, lesson_id, lesson_date)
                if rng.random() < 0.6:
                    yield HomeworkAssigned(**header(start + timedelta(minutes=44), actor=teacher), class_unit=unit,
                                           subject_code=subject, teacher_id=teacher, lesson_date=lesson_date,
                                           due_date=lesson_date + timedelta(days=rng.choice((1, 2, 7))),
                                           text=f"§{rng.randint(1, 40)}, упр. {rng.randint(1, 300)}")
    closing = datetime.combine(first_day + timedelta(days=days - 1), time(16, 0), MSK)
    for unit, pupils in classes.items():
        subject = SUBJECTS[list(CLASS_UNITS).index(unit)]
        for pupil in pupils:
            roll = rng.random()
            mark = (Mark(MarkScale.SPECIAL, "осв") if roll < 0.03 else Mark(MarkScale.SPECIAL, "н/а")
                    if roll < 0.05 else Mark(MarkScale.FIVE_POINT, str(_pick(rng, FIVE_POINT_WEIGHTS))))
            yield TermGradeFinalized(**header(closing, actor=teachers[subject]), student_id=pupil,
                                     subject_code=subject, term_id=TERM_ID, period=TermPeriod.QUARTER, mark=mark)


def _grade_with_history(rng, header, at, pupil, unit, subject, teacher, lesson_id, lesson_date) -> Iterator[Event]:
    posted = GradePosted(**header(at, actor=teacher), student_id=pupil, class_unit=unit, subject_code=subject,
                         teacher_id=teacher, lesson_id=lesson_id, lesson_date=lesson_date,
                         work_type=rng.choice(WORK_TYPES), weight=Decimal(rng.choice(("1", "1", "2"))),
                         mark=Mark(MarkScale.FIVE_POINT, str(_pick(rng, FIVE_POINT_WEIGHTS))),
                         counts_in_average=True, term_id=TERM_ID)
    yield posted
    later = at + timedelta(hours=2)
    roll = rng.random()
    if roll < 0.04:
        yield GradeCorrected(**header(later, actor=teacher, record_id=f"{posted.source_record_id}-fix"),
                             grade_ref=posted.source_record_id,
                             mark=Mark(MarkScale.FIVE_POINT, str(_pick(rng, FIVE_POINT_WEIGHTS))),
                             reason="Ошибка при выставлении")
    elif roll < 0.06:
        yield GradeRetracted(**header(later, actor=teacher, record_id=f"{posted.source_record_id}-del"),
                             grade_ref=posted.source_record_id, reason="Оценка выставлена не тому ученику")


def _bad_submissions(rng: random.Random, day: SchoolDay) -> Iterator[BadSubmission]:
    """A few mistakes a real vendor makes, each with the fault ejx must answer."""
    rest_vendor = next(vendor.name for vendor in day.vendors if vendor.channel == "rest")
    sample = next(event for event in day.events[rest_vendor] if isinstance(event, GradePosted))
    base = event_to_dict(sample)
    other_vendor_school = next(school.school_id for school in day.schools if school.vendor != rest_vendor)

    def variant(**changes: object) -> dict[str, object]:
        data = {**base, "event_id": str(_uuid(rng)), "source_record_id": f"bad-{rng.getrandbits(32):08x}"}
        data.update(changes)
        return data

    yield BadSubmission(rest_vendor, variant(mark={"scale": "five-point", "value": "7"}),
                        "InvalidContent", "mark 7 on the five-point scale")
    yield BadSubmission(rest_vendor, variant(mark={"scale": "five-point", "value": "н"}),
                        "InvalidContent", "«н» sent as a grade")
    yield BadSubmission(rest_vendor, variant(student_id="12345678901"),
                        "InvalidContent", "a SNILS instead of a pseudonymous id")
    yield BadSubmission(rest_vendor, variant(type="GradeErased"), "UnknownMessageType", "no such event type")
    yield BadSubmission(rest_vendor, variant(school_id=other_vendor_school),
                        "AccessDenied", "a school registered to another vendor")
