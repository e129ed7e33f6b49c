"""The canonical events: one frozen dataclass per type over a common header.

Every event is checked when it is built, whatever it was built from (XML,
JSON, code): types by annotation, values by :mod:`broker.domain.model.rules`, and the
few rules that relate two fields by the event type itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cache
from typing import ClassVar

from broker.domain.model import xml_form
from broker.domain.model.errors import ModelError, UnknownEventType
from broker.domain.model.fields import field_specs
from broker.domain.model.marks import Mark, MarkScale
from broker.domain.model.rules import RULES, Rule

SCHEMA_VERSION = "1.0"
"""Minor version of schemas/events.xsd that this model writes."""

MAX_BATCH = 1000
"""Most events in one EventBatch, as the XSD allows."""


class EventType(StrEnum):
    """An event's type: the name of its root element and its JSON ``type``."""

    GRADE_POSTED = "GradePosted"
    GRADE_CORRECTED = "GradeCorrected"
    GRADE_RETRACTED = "GradeRetracted"
    ATTENDANCE_MARKED = "AttendanceMarked"
    HOMEWORK_ASSIGNED = "HomeworkAssigned"
    TERM_GRADE_FINALIZED = "TermGradeFinalized"


class AttendanceStatus(StrEnum):
    """Attendance at one lesson; ABSENT is the journal's «н»."""

    PRESENT = "present"
    ABSENT = "absent"
    LATE = "late"
    EXCUSED = "excused"
    ILL = "ill"


class TermPeriod(StrEnum):
    """What a final grade closes."""

    QUARTER = "quarter"
    HALF = "half"
    YEAR = "year"
    EXAM = "exam"


@dataclass(frozen=True, kw_only=True)
class Event:
    """The header every canonical event carries."""

    type: ClassVar[EventType]
    event_id: uuid.UUID
    schema_version: str = SCHEMA_VERSION
    source_system: str
    source_record_id: str
    version: int
    occurred_at: datetime
    recorded_at: datetime
    school_id: str
    academic_year: str
    actor_id: str

    def __post_init__(self) -> None:
        for name, kind, required, rule in _checks(type(self)):
            value = getattr(self, name)
            if value is None and not required:
                continue
            if type(value) is not kind and not _is_a(value, kind):
                raise ModelError(f"{name} must be {kind.__name__}, not {type(value).__name__}", field=name)
            problem = rule(value) if rule is not None else None
            if problem:
                raise ModelError(f"{name}: {problem}", field=name)

    @property
    def idempotency_key(self) -> str:
        """Fixed at the source: the same change of the same record always has the same key."""
        return f"{self.source_system}/{self.source_record_id}/{self.version}"

    def to_xml(self) -> bytes:
        """The event as a standalone UTF-8 document of schemas/events.xsd."""
        return xml_form.to_bytes_of_event(self)


@dataclass(frozen=True, kw_only=True)
class GradePosted(Event):
    """A teacher put a mark in the journal."""

    type: ClassVar[EventType] = EventType.GRADE_POSTED
    student_id: str
    class_unit: str
    subject_code: str
    teacher_id: str
    lesson_id: str
    lesson_date: date
    work_type: str
    weight: Decimal
    mark: Mark
    counts_in_average: bool
    term_id: str
    comment: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _journal_mark(self.mark)


@dataclass(frozen=True, kw_only=True)
class GradeCorrected(Event):
    """A posted grade got another mark."""

    type: ClassVar[EventType] = EventType.GRADE_CORRECTED
    grade_ref: str
    """source_record_id of the GradePosted being corrected."""
    mark: Mark
    reason: str

    def __post_init__(self) -> None:
        super().__post_init__()
        _journal_mark(self.mark)


@dataclass(frozen=True, kw_only=True)
class GradeRetracted(Event):
    """A posted grade was removed: a tombstone."""

    type: ClassVar[EventType] = EventType.GRADE_RETRACTED
    grade_ref: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class AttendanceMarked(Event):
    """A student's attendance at one lesson."""

    type: ClassVar[EventType] = EventType.ATTENDANCE_MARKED
    student_id: str
    lesson_id: str
    date: date
    status: AttendanceStatus
    minutes_late: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.minutes_late is not None and self.status is not AttendanceStatus.LATE:
            raise ModelError(f"minutes_late is only for status late, not {self.status}", field="minutes_late")


@dataclass(frozen=True, kw_only=True)
class HomeworkAssigned(Event):
    """Homework set for a class at a lesson."""

    type: ClassVar[EventType] = EventType.HOMEWORK_ASSIGNED
    class_unit: str
    subject_code: str
    teacher_id: str
    lesson_date: date
    due_date: date
    text: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.due_date < self.lesson_date:
            raise ModelError(f"due_date {self.due_date} is before lesson_date {self.lesson_date}",
                             field="due_date")


@dataclass(frozen=True, kw_only=True)
class TermGradeFinalized(Event):
    """The final mark of a quarter, half, year or exam; may be осв, н/а, зач or незач."""

    type: ClassVar[EventType] = EventType.TERM_GRADE_FINALIZED
    student_id: str
    subject_code: str
    term_id: str
    period: TermPeriod
    mark: Mark


EVENT_TYPES: dict[str, type[Event]] = {cls.type.value: cls for cls in (
    GradePosted, GradeCorrected, GradeRetracted, AttendanceMarked, HomeworkAssigned, TermGradeFinalized)}
"""Event classes by type name."""


def event_from_xml(element) -> Event:
    """Read one event from its parsed root element (ElementTree API, e.g. lxml's)."""
    name = xml_form.local_name(element)
    if name == "EventBatch":
        raise ModelError("an EventBatch holds many events; use events_from_xml")
    return xml_form.event_of(_event_class(element), element)


def events_from_xml(element) -> tuple[Event, ...]:
    """Read the events of one event document or of an EventBatch."""
    if xml_form.local_name(element) != "EventBatch":
        return (event_from_xml(element),)
    xml_form.expect_namespace(element)
    events = tuple(xml_form.event_of(_event_class(child), child) for child in xml_form.children(element))
    if not 1 <= len(events) <= MAX_BATCH:
        raise ModelError(f"an EventBatch holds 1..{MAX_BATCH} events, not {len(events)}")
    return events


def batch_to_xml(events: Sequence[Event]) -> bytes:
    """Many events as one EventBatch document."""
    if not 1 <= len(events) <= MAX_BATCH:
        raise ModelError(f"an EventBatch holds 1..{MAX_BATCH} events, not {len(events)}")
    return xml_form.to_bytes_of_batch(events)


def _event_class(element) -> type[Event]:
    xml_form.expect_namespace(element)
    name = xml_form.local_name(element)
    if name not in EVENT_TYPES:
        raise UnknownEventType(f"{name} is not an event type (known: {', '.join(EVENT_TYPES)})")
    return EVENT_TYPES[name]


def _journal_mark(mark: Mark) -> None:
    if mark.scale is MarkScale.SPECIAL:
        raise ModelError(f"{mark.value!r} is a final-grade outcome, not a journal mark", field="mark")


@cache
def _checks(cls: type) -> tuple[tuple[str, type, bool, Rule | None], ...]:
    """Per field of an event type: name, kind, required, and its value rule if it has one."""
    return tuple((spec.name, spec.kind, spec.required, RULES.get(spec.name)) for spec in field_specs(cls))


def _is_a(value: object, kind: type) -> bool:
    if kind is int:
        return type(value) is int  # not bool
    if kind is date:
        return type(value) is date  # not datetime
    return isinstance(value, kind)
