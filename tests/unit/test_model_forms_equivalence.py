"""The fast XML and JSON forms give exactly what the first, ElementTree-based ones gave.

``Reference`` below is a frozen copy of the model's wire forms as they were
before they were made fast (commit 419cb13: ``fields.py``, ``xml_form.py``,
``json_form.py`` and the readers of ``events.py``). Every event we can think
of, and many broken inputs, must give the same bytes, the same dicts (key
order and JSON types included), the same events and the same errors (class,
message, field) from both. Two literal documents pin the reference itself.
Do not "fix" the reference: it is the behaviour the fast forms must keep.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from functools import cache
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from broker.devtools.simulation import simulate
from broker.domain.model import (
    EVENT_TYPES,
    MAX_BATCH,
    AttendanceMarked,
    AttendanceStatus,
    Event,
    GradeCorrected,
    GradePosted,
    GradeRetracted,
    HomeworkAssigned,
    Mark,
    MarkScale,
    ModelError,
    TermGradeFinalized,
    TermPeriod,
    UnknownEventType,
    batch_to_xml,
    event_from_dict,
    event_from_xml,
    event_to_dict,
    events_from_xml,
)
from broker.xml import hardened

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "events" / "valid"


# --- the frozen reference ------------------------------------------------------------------------

class Reference:
    """The wire forms as of commit 419cb13, condensed but unchanged in behaviour."""

    NAMESPACE = "urn://ejx/events/1"
    PREFIX = "{" + NAMESPACE + "}"
    MARK_ELEMENTS = {MarkScale.FIVE_POINT: "FivePoint", MarkScale.PASS_FAIL: "PassFail", MarkScale.TEN: "Ten",
                     MarkScale.HUNDRED: "Hundred", MarkScale.SPECIAL: "Special"}
    MARK_SCALES = {element: scale for scale, element in MARK_ELEMENTS.items()}
    LEXICAL = {
        uuid.UUID: re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
        datetime: re.compile(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"),
        date: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
        int: re.compile(r"[+-]?[0-9]{1,19}"),
        Decimal: re.compile(r"[+-]?([0-9]{1,20}(\.[0-9]{0,20})?|\.[0-9]{1,20})"),
        bool: re.compile(r"true|false"),
    }

    # fields.py

    @staticmethod
    @cache
    def field_specs(cls: type) -> tuple[tuple[str, type, bool, str], ...]:
        hints = get_type_hints(cls)
        specs = []
        for field in dataclasses.fields(cls):
            hint = hints[field.name]
            optional = type(None) in get_args(hint)
            kind = next(arg for arg in get_args(hint) if arg is not type(None)) if optional else hint
            has_default = field.default is not dataclasses.MISSING
            element = "".join(part.capitalize() for part in field.name.split("_"))
            specs.append((field.name, kind, not (optional or has_default), element))
        return tuple(specs)

    @staticmethod
    def to_text(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, Enum):
            return str(value.value)
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return format(value.normalize(), "f")
        return str(value)

    @classmethod
    def from_text(cls, kind: type, text: str) -> object:
        if kind is str:
            return text
        if issubclass(kind, Enum):
            try:
                return kind(text)
            except ValueError:
                raise ModelError(f"{text!r} is not one of {', '.join(str(m.value) for m in kind)}") from None
        text = text.strip(" \t\r\n")
        if not cls.LEXICAL[kind].fullmatch(text):
            raise ModelError(f"{text!r} is not a valid {kind.__name__}")
        try:
            if kind is bool:
                return text == "true"
            if kind is datetime:
                return datetime.fromisoformat(text)
            if kind is date:
                return date.fromisoformat(text)
            return kind(text)
        except ValueError as error:
            raise ModelError(f"{text!r} is not a valid {kind.__name__}: {error}") from None

    # xml_form.py and the writers of events.py

    @classmethod
    def event_element(cls, event) -> ET.Element:
        root = ET.Element(cls.PREFIX + type(event).__name__)
        for name, _kind, _required, element in cls.field_specs(type(event)):
            value = getattr(event, name)
            if value is None:
                continue
            child = ET.SubElement(root, cls.PREFIX + element)
            if isinstance(value, Mark):
                ET.SubElement(child, cls.PREFIX + cls.MARK_ELEMENTS[value.scale]).text = value.value
            else:
                child.text = cls.to_text(value)
        return root

    @classmethod
    def to_bytes(cls, root: ET.Element) -> bytes:
        return ET.tostring(root, encoding="UTF-8", xml_declaration=True, default_namespace=cls.NAMESPACE)

    @classmethod
    def to_xml(cls, event) -> bytes:
        return cls.to_bytes(cls.event_element(event))

    @classmethod
    def batch_to_xml(cls, events) -> bytes:
        if not 1 <= len(events) <= MAX_BATCH:
            raise ModelError(f"an EventBatch holds 1..{MAX_BATCH} events, not {len(events)}")
        root = ET.Element(cls.PREFIX + "EventBatch")
        root.extend([cls.event_element(event) for event in events])
        return cls.to_bytes(root)

    # xml_form.py and the readers of events.py

    @classmethod
    def event_from_xml(cls, element):
        if cls.local_name(element) == "EventBatch":
            raise ModelError("an EventBatch holds many events; use events_from_xml")
        return cls.event_of(cls.event_class(element), element)

    @classmethod
    def events_from_xml(cls, element):
        if cls.local_name(element) != "EventBatch":
            return (cls.event_from_xml(element),)
        cls.expect_namespace(element)
        events = tuple(cls.event_of(cls.event_class(child), child) for child in cls.children(element))
        if not 1 <= len(events) <= MAX_BATCH:
            raise ModelError(f"an EventBatch holds 1..{MAX_BATCH} events, not {len(events)}")
        return events

    @classmethod
    def event_class(cls, element):
        cls.expect_namespace(element)
        name = cls.local_name(element)
        if name not in EVENT_TYPES:
            raise UnknownEventType(f"{name} is not an event type (known: {', '.join(EVENT_TYPES)})")
        return EVENT_TYPES[name]

    @classmethod
    def event_of(cls, event_class, element):
        values: dict[str, object] = {}
        found: dict[str, object] = {}
        pending = cls.children(element)
        for name, kind, required, tag in cls.field_specs(event_class):
            if pending and pending[0].tag == cls.PREFIX + tag:
                child = pending.pop(0)
                found[name] = child
                values[name] = cls.read_xml(name, kind, tag, child)
            elif required:
                raise ModelError(f"{cls.where(element)}: {tag} is missing")
        if pending:
            raise ModelError(f"{cls.where(pending[0])}: unexpected element {cls.local_name(pending[0])}")
        try:
            return event_class(**values)
        except ModelError as error:
            raise ModelError(f"{cls.where(found.get(error.field, element))}: {error}", field=error.field) from None

    @staticmethod
    def children(element) -> list:
        return [child for child in element if isinstance(child.tag, str)]

    @staticmethod
    def local_name(element) -> str:
        return element.tag.rpartition("}")[2]

    @classmethod
    def expect_namespace(cls, element) -> None:
        if not element.tag.startswith(cls.PREFIX):
            raise ModelError(f"{cls.where(element)}: {cls.local_name(element)} must be in namespace {cls.NAMESPACE}")

    @classmethod
    def read_xml(cls, name, kind, tag, child) -> object:
        try:
            if kind is Mark:
                inner = cls.children(child)
                if len(inner) != 1 or cls.local_name(inner[0]) not in cls.MARK_SCALES:
                    raise ModelError(f"Mark holds exactly one of {', '.join(cls.MARK_SCALES)}")
                return Mark(cls.MARK_SCALES[cls.local_name(inner[0])], inner[0].text or "")
            if len(child):
                raise ModelError(f"{tag} holds text, not elements")
            return cls.from_text(kind, child.text or "")
        except ModelError as error:
            raise ModelError(f"{cls.where(child)}: {error}", field=name) from None

    @classmethod
    def where(cls, element) -> str:
        line = getattr(element, "sourceline", None)
        steps = []
        node = element
        while node is not None:
            steps.append(cls.local_name(node))
            node = node.getparent() if hasattr(node, "getparent") else None
        path = "/" + "/".join(reversed(steps))
        return f"line {line}, {path}" if line else path

    # json_form.py

    @classmethod
    def event_to_dict(cls, event) -> dict[str, object]:
        data: dict[str, object] = {"type": event.type.value}
        for name, _kind, _required, _element in cls.field_specs(type(event)):
            value = getattr(event, name)
            if value is None:
                continue
            if isinstance(value, Mark):
                data[name] = {"scale": value.scale.value, "value": value.value}
            elif type(value) in (int, bool):
                data[name] = value
            else:
                data[name] = cls.to_text(value)
        return data

    @classmethod
    def event_from_dict(cls, data):
        if not isinstance(data, Mapping):
            raise ModelError(f"an event is a JSON object, not {type(data).__name__}")
        name = data.get("type")
        # Deliberate fix over the original: a non-string type is refused, not a TypeError.
        if not isinstance(name, str) or name not in EVENT_TYPES:
            raise UnknownEventType(f"type {name!r} is not an event type (known: {', '.join(EVENT_TYPES)})")
        event_class = EVENT_TYPES[name]
        specs = cls.field_specs(event_class)
        unknown = set(data) - {"type"} - {spec[0] for spec in specs}
        if unknown:
            raise ModelError(f"unknown fields for {name}: {', '.join(sorted(unknown))}")
        values = {}
        for field, kind, required, _element in specs:
            if data.get(field) is None:
                if required:
                    raise ModelError(f"{field} is missing", field=field)
                continue
            try:
                values[field] = cls.read_json(kind, data[field])
            except ModelError as error:
                raise ModelError(f"{field}: {error}", field=field) from None
        return event_class(**values)

    @classmethod
    def read_json(cls, kind, value) -> object:
        if kind is Mark:
            if not isinstance(value, Mapping) or set(value) != {"scale", "value"}:
                raise ModelError('a mark is {"scale": ..., "value": ...}')
            scale, mark = value["scale"], value["value"]
            # Deliberate fix over the original: an unhashable scale is refused, not a TypeError.
            if not isinstance(scale, str) or scale not in set(MarkScale):
                raise ModelError(f"scale {scale!r} is not one of {', '.join(MarkScale)}")
            if type(mark) is int:
                mark = str(mark)
            if not isinstance(mark, str):
                raise ModelError("a mark value is a string")
            return Mark(MarkScale(scale), mark)
        if kind in (int, bool):
            if type(value) is not kind:
                raise ModelError(f"must be a JSON {'boolean' if kind is bool else 'integer'}")
            return value
        if kind is Decimal and type(value) in (int, float):
            return Decimal(str(value))
        if not isinstance(value, str):
            raise ModelError(f"must be a JSON string, not {type(value).__name__}")
        return cls.from_text(kind, value)


# --- the events --------------------------------------------------------------------------------

MSK = timezone(timedelta(hours=3))
TRICKY_TEXTS = (
    'A & B < C > D "quoted" \'single\'',
    "&amp; &lt; &#x41; ]]> <![CDATA[x]]> <!-- not a comment -->",
    "Все задачи решены верно, ёжик Ё",
    "line one\nline two\r\nline three\ttabbed",
    "  leading and trailing blanks  ",
    "emoji 🎓📚, CJK 学校, Arabic مدرسة, combining é, nbsp\u00a0here, bidi \u202e",
    "\u0085 next line, \u2028 line separator, \ufeff bom",
    "x" * 1000,
)


def _header(number: int, **changes: object) -> dict[str, object]:
    occurred = datetime(2026, 10, 5, 9, 15, tzinfo=MSK)
    return {
        "event_id": uuid.UUID(int=0x0B7E3C1A5D2F4A8E9C612F4D8E7A1B30 + number),
        "source_system": "dnevnik-plus", "source_record_id": f"rec-{number}", "version": 1,
        "occurred_at": occurred, "recorded_at": occurred + timedelta(minutes=5), "school_id": "sch-77-0412",
        "academic_year": "2026-2027", "actor_id": "tc-77b0c3d2", **changes,
    }


def _grade(number: int, **changes: object) -> GradePosted:
    fields = dict(
        student_id="st-77k3f9q2m", class_unit="5А", subject_code="MATH", teacher_id="tc-77b0c3d2",
        lesson_id="lesson-1", lesson_date=date(2026, 10, 5), work_type="Контрольная работа",
        weight=Decimal("1.5"), mark=Mark(MarkScale.FIVE_POINT, "5"), counts_in_average=True, term_id="2026-2027-q1")
    header = {key: changes.pop(key) for key in list(changes) if key in _header(0)}
    return GradePosted(**_header(number, **header), **{**fields, **changes})


def crafted_events() -> list[Event]:
    """Edge cases the simulation does not produce: texts, numbers, instants, scales, optional fields."""
    utc, odd = timezone.utc, timezone(timedelta(hours=-9, minutes=-30))
    events: list[Event] = []
    for number, text in enumerate(TRICKY_TEXTS):
        events.append(_grade(number, comment=text, work_type=text.replace("\n", " ").replace("\r", " ").strip()
                             if text.strip() and len(text) <= 100 else "Работа"))
        events.append(GradeCorrected(**_header(100 + number), grade_ref="rec-1",
                                     mark=Mark(MarkScale.TEN, "7"), reason=text[:500]))
        events.append(GradeRetracted(**_header(200 + number), grade_ref="rec-1", reason=text[:500]))
        events.append(HomeworkAssigned(**_header(300 + number), class_unit="10Б", subject_code="RUS",
                                       teacher_id="tc-77b0c3d2", lesson_date=date(2026, 10, 5),
                                       due_date=date(2026, 10, 6), text=text))
    for number, weight in enumerate(("0.01", "0.10", "1", "1.0", "1.50", "2.25", "10", "10.00", "1E+1", "5E-1",
                                     "0.5", "3.3")):
        events.append(_grade(400 + number, weight=Decimal(weight)))
    for number, (scale, mark) in enumerate((
            (MarkScale.FIVE_POINT, "1"), (MarkScale.PASS_FAIL, "зач"), (MarkScale.PASS_FAIL, "незач"),
            (MarkScale.TEN, "10"), (MarkScale.HUNDRED, "0"), (MarkScale.HUNDRED, "100"))):
        events.append(_grade(500 + number, mark=Mark(scale, mark), counts_in_average=number % 2 == 0))
    for number, mark in enumerate((Mark(MarkScale.SPECIAL, "осв"), Mark(MarkScale.SPECIAL, "н/а"),
                                   Mark(MarkScale.HUNDRED, "42"))):
        for period in TermPeriod:
            events.append(TermGradeFinalized(**_header(600 + 10 * number + len(events)), student_id="st-77k3f9q2m",
                                             subject_code="MATH", term_id="2026-2027-y", period=period, mark=mark))
    for number, status in enumerate(AttendanceStatus):
        events.append(AttendanceMarked(**_header(700 + number), student_id="st-77k3f9q2m", lesson_id="l-1",
                                       date=date(2026, 10, 5), status=status,
                                       minutes_late=240 if status is AttendanceStatus.LATE else None))
    instants = (datetime(2026, 10, 5, 9, 15, 0, 1, tzinfo=utc), datetime(2026, 10, 5, 9, 15, 7, 123000, tzinfo=odd),
                datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=14))),
                datetime(2026, 1, 1, tzinfo=timezone(timedelta(minutes=-1))))
    for number, instant in enumerate(instants):
        events.append(_grade(800 + number, occurred_at=instant, recorded_at=instant, version=2**63 - 1 - number,
                             schema_version="1.999", source_record_id="!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"))
    # A StrEnum is a str: it passes a str field's rules, and is written through its value.
    events.append(_grade(900, comment=AttendanceStatus.EXCUSED, work_type=TermPeriod.EXAM))
    events.append(HomeworkAssigned(**_header(901), class_unit="11-IT", subject_code="CS_1.A-B",
                                   teacher_id="tc-77b0c3d2", lesson_date=date(2026, 10, 5),
                                   due_date=date(2026, 10, 5), text="<b>&nbsp;</b>"))
    return events


@cache
def all_events() -> tuple[Event, ...]:
    """The valid examples, a simulated school week and the crafted cases: about 5,000 events."""
    examples = [event for path in sorted(EXAMPLES.glob("*.xml"))
                for event in events_from_xml(hardened.parse(path.read_bytes()))]
    simulated = [event for events in simulate(days=5).events.values() for event in events]
    return (*examples, *simulated, *crafted_events())


def outcome(call: Callable[[], object]) -> tuple[str, object]:
    """What a call gives: its result, or its error's class, message and field (any error: a TypeError too)."""
    try:
        return "returned", call()
    except Exception as error:  # noqa: BLE001 - the exact failure is what is compared
        return "raised", (type(error).__name__, str(error), getattr(error, "field", None))


def typed(data: object) -> object:
    """A dict with each value's type next to it, so 1 and True, or "1" and 1, never compare equal."""
    if isinstance(data, dict):
        return [(key, typed(value)) for key, value in data.items()]
    return (type(data).__name__, data)


# --- the pins on the reference itself ----------------------------------------------------------

PINNED_XML = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b'<GradePosted xmlns="urn://ejx/events/1"><EventId>0b7e3c1a-5d2f-4a8e-9c61-2f4d8e7a1b30</EventId>'
    b"<SchemaVersion>1.0</SchemaVersion><SourceSystem>dnevnik-plus</SourceSystem>"
    b"<SourceRecordId>rec-0</SourceRecordId><Version>1</Version>"
    b"<OccurredAt>2026-10-05T09:15:00+03:00</OccurredAt><RecordedAt>2026-10-05T09:20:00+03:00</RecordedAt>"
    b"<SchoolId>sch-77-0412</SchoolId><AcademicYear>2026-2027</AcademicYear><ActorId>tc-77b0c3d2</ActorId>"
    b"<StudentId>st-77k3f9q2m</StudentId><ClassUnit>5\xd0\x90</ClassUnit><SubjectCode>MATH</SubjectCode>"
    b"<TeacherId>tc-77b0c3d2</TeacherId><LessonId>lesson-1</LessonId><LessonDate>2026-10-05</LessonDate>"
    b"<WorkType>A &amp; B &lt; C &gt; D \"quoted\" 'single'</WorkType><Weight>1.5</Weight>"
    b"<Mark><FivePoint>5</FivePoint></Mark><CountsInAverage>true</CountsInAverage>"
    b"<TermId>2026-2027-q1</TermId><Comment>A &amp; B &lt; C &gt; D \"quoted\" 'single'</Comment></GradePosted>"
)
PINNED_DICT = [
    ("type", ("str", "GradePosted")), ("event_id", ("str", "0b7e3c1a-5d2f-4a8e-9c61-2f4d8e7a1b30")),
    ("schema_version", ("str", "1.0")), ("source_system", ("str", "dnevnik-plus")),
    ("source_record_id", ("str", "rec-0")), ("version", ("int", 1)),
    ("occurred_at", ("str", "2026-10-05T09:15:00+03:00")), ("recorded_at", ("str", "2026-10-05T09:20:00+03:00")),
    ("school_id", ("str", "sch-77-0412")), ("academic_year", ("str", "2026-2027")),
    ("actor_id", ("str", "tc-77b0c3d2")), ("student_id", ("str", "st-77k3f9q2m")), ("class_unit", ("str", "5А")),
    ("subject_code", ("str", "MATH")), ("teacher_id", ("str", "tc-77b0c3d2")), ("lesson_id", ("str", "lesson-1")),
    ("lesson_date", ("str", "2026-10-05")), ("work_type", ("str", 'A & B < C > D "quoted" \'single\'')),
    ("weight", ("str", "1.5")), ("mark", [("scale", ("str", "five-point")), ("value", ("str", "5"))]),
    ("counts_in_average", ("bool", True)), ("term_id", ("str", "2026-2027-q1")),
    ("comment", ("str", 'A & B < C > D "quoted" \'single\'')),
]


def test_the_reference_still_writes_what_the_first_forms_wrote():
    event = crafted_events()[0]
    assert Reference.to_xml(event) == PINNED_XML
    assert typed(Reference.event_to_dict(event)) == PINNED_DICT
    assert event.to_xml() == PINNED_XML
    assert typed(event_to_dict(event)) == PINNED_DICT


def test_the_corpus_is_broad():
    events = all_events()
    assert len(events) > 4000
    assert {type(event) for event in events} == set(EVENT_TYPES.values())
    assert any(b"&amp;" in Reference.to_xml(event) for event in events)


# --- writing -----------------------------------------------------------------------------------

def test_to_xml_is_byte_for_byte_the_reference():
    mismatches = [(event, event.to_xml(), Reference.to_xml(event))
                  for event in all_events() if event.to_xml() != Reference.to_xml(event)]
    assert not mismatches, mismatches[:3]


def test_batch_to_xml_is_byte_for_byte_the_reference():
    events = all_events()
    for size in (1, 2, 17, MAX_BATCH):
        batch = events[size:2 * size]
        assert batch_to_xml(batch) == Reference.batch_to_xml(batch)
    for size in (0, MAX_BATCH + 1):
        assert outcome(lambda: batch_to_xml(events[:size])) == outcome(lambda: Reference.batch_to_xml(events[:size]))


def test_event_to_dict_is_the_reference_with_the_same_key_order_and_json_types():
    mismatches = [(event, event_to_dict(event), Reference.event_to_dict(event)) for event in all_events()
                  if typed(event_to_dict(event)) != typed(Reference.event_to_dict(event))]
    assert not mismatches, mismatches[:3]


class Weight(Decimal):
    """A Decimal of another type: written through the general path."""


class Scaled(Mark):
    """A Mark of another type: written through the general path."""


@pytest.mark.parametrize(("field", "value"), [
    ("comment", ""), ("comment", "\ud800 lone surrogate"), ("comment", None), ("student_id", None),
    ("comment", 42), ("comment", Decimal("1E+2")), ("comment", uuid.UUID(int=7)), ("comment", TermPeriod.YEAR),
    ("version", True), ("version", False), ("lesson_date", datetime(2026, 10, 5, 9, 15, tzinfo=MSK)),
    ("weight", Weight("2.50")), ("mark", Scaled(MarkScale.TEN, "9")), ("event_id", "not-a-uuid & <more>"),
    ("counts_in_average", 1), ("work_type", AttendanceStatus.ILL), ("occurred_at", date(2026, 10, 5)),
])
def test_values_the_constructor_never_lets_in_are_written_like_the_reference(field, value):
    event = _grade(0, comment="ok")
    object.__setattr__(event, field, value)  # past the checks, as only a bug could
    assert outcome(event.to_xml) == outcome(lambda: Reference.to_xml(event))
    assert outcome(lambda: batch_to_xml([event, event])) == outcome(lambda: Reference.batch_to_xml([event, event]))
    assert outcome(lambda: typed(event_to_dict(event))) == outcome(lambda: typed(Reference.event_to_dict(event)))


# --- reading what was written ------------------------------------------------------------------

def test_event_from_xml_reads_every_event_back_like_the_reference():
    for event in all_events():
        document = Reference.to_xml(event)
        element = hardened.parse(document)
        assert event_from_xml(element) == Reference.event_from_xml(element)
        assert event_from_xml(element) == event or b"\r" in document  # XML reads a written CR LF as LF
        plain = ET.fromstring(document)  # the ElementTree API without sourceline or getparent
        assert event_from_xml(plain) == Reference.event_from_xml(plain)


def test_event_from_dict_reads_every_event_back_like_the_reference():
    for event in all_events():
        data = Reference.event_to_dict(event)
        assert event_from_dict(data) == Reference.event_from_dict(data) == event


def test_events_from_xml_reads_a_batch_like_the_reference():
    element = hardened.parse(Reference.batch_to_xml(all_events()[:MAX_BATCH]))
    assert events_from_xml(element) == Reference.events_from_xml(element) == all_events()[:MAX_BATCH]


# --- reading what is broken: the same error, message and field ---------------------------------

def _dict_variants() -> list[object]:
    base = Reference.event_to_dict(_grade(0, comment="ok"))
    attendance = Reference.event_to_dict(AttendanceMarked(**_header(1), student_id="st-77k3f9q2m", lesson_id="l-1",
                                                          date=date(2026, 10, 5), status=AttendanceStatus.LATE,
                                                          minutes_late=5))
    homework = Reference.event_to_dict(crafted_events()[3])
    variants: list[object] = [[], "GradePosted", None, 42, {}, {"type": None}, {"type": "GradeErased"},
                              {"type": ["GradePosted"]}, {"type": "GradePosted"}, {**base, "type": "gradeposted"}]
    for key in base:
        variants.append({k: v for k, v in base.items() if k != key})
        variants.append({**base, key: None})
        for wrong in ("", " ", "1", 1, 1.5, True, [], {}, "x" * 2000, "н", "2026-10-05", "nan", "1_0", " 2 ", "\x01",
                      "2026-10-05T09:15:00", "2026-02-30T09:15:00+03:00", "00000000-0000-0000-0000-000000000000"):
            variants.append({**base, key: wrong})
    variants += [
        {**base, "extra": 1, "another": 2}, {**base, "Type": "GradePosted"},
        {**base, "weight": 2}, {**base, "weight": 1.25}, {**base, "weight": 1e-7}, {**base, "weight": 0},
        {**base, "weight": 11}, {**base, "weight": "1.005"}, {**base, "weight": "+.5"}, {**base, "weight": "-1"},
        {**base, "weight": float("nan")}, {**base, "weight": 10**30},
        {**base, "version": 0}, {**base, "version": 2**63}, {**base, "version": -1}, {**base, "version": 1.0},
        {**base, "event_id": "0B7E3C1A-5D2F-4A8E-9C61-2F4D8E7A1B30"},
        {**base, "event_id": " 0b7e3c1a-5d2f-4a8e-9c61-2f4d8e7a1b30\n"},
        {**base, "occurred_at": "2026-10-05T09:15:00Z"}, {**base, "occurred_at": "2026-10-05T09:15:00.5+03:00"},
        {**base, "occurred_at": "2026-10-05T09:15:00+03:00:30"}, {**base, "occurred_at": "2026-10-05T24:00:00Z"},
        {**base, "lesson_date": "2026-13-01"}, {**base, "lesson_date": "20261005"},
        {**base, "lesson_date": "\u20032026-10-05"}, {**base, "weight": "\u00a01.5"}, {**base, "weight": "\x0b1.5"},
        {**base, "event_id": "\x0c0b7e3c1a-5d2f-4a8e-9c61-2f4d8e7a1b30"}, {**base, "version": "\t1"},
        {**base, "counts_in_average": "true"}, {**base, "counts_in_average": 1},
        {**base, "mark": {"scale": "five-point", "value": 5}}, {**base, "mark": {"scale": "five-point", "value": 7}},
        {**base, "mark": {"scale": "five-point", "value": "н"}},
        {**base, "mark": {"scale": "special", "value": "осв"}}, {**base, "mark": {"scale": "hundred", "value": 100}},
        {**base, "mark": {"scale": "FIVE_POINT", "value": "5"}}, {**base, "mark": {"scale": None, "value": "5"}},
        {**base, "mark": {"scale": "hundred", "value": "07"}}, {**base, "mark": {"scale": "nope", "value": "5"}},
        {**base, "mark": {"scale": "ten", "value": 5.0}}, {**base, "mark": {"scale": "ten"}},
        {**base, "mark": {"scale": "ten", "value": "5", "x": 1}}, {**base, "mark": "5"},
        {**base, "mark": {"scale": ["ten"], "value": "5"}},
        {**base, "class_unit": "12А"}, {**base, "student_id": "12345678901"}, {**base, "work_type": "a\nb"},
        {**base, "comment": "\x0b"}, {**base, "comment": "\ud800"}, {**base, "academic_year": "2026-2028"},
        {**attendance, "minutes_late": 5, "status": "present"}, {**attendance, "status": "LATE"},
        {**attendance, "minutes_late": 0}, {**attendance, "minutes_late": True}, {**attendance, "minutes_late": "5"},
        {**homework, "due_date": "2026-10-04"},
    ]
    return variants


def test_event_from_dict_refuses_like_the_reference():
    for data in _dict_variants():
        assert outcome(lambda: event_from_dict(data)) == outcome(lambda: Reference.event_from_dict(data)), data


def _xml_variants() -> list[bytes]:
    good = Reference.to_xml(_grade(0, comment="ok")).replace(b"><", b">\n<")  # one element per line
    homework = Reference.to_xml(crafted_events()[3]).replace(b"><", b">\n<")
    attendance = Reference.to_xml(AttendanceMarked(
        **_header(1), student_id="st-77k3f9q2m", lesson_id="l-1", date=date(2026, 10, 5),
        status=AttendanceStatus.LATE, minutes_late=5)).replace(b"><", b">\n<")
    variants = [good, homework, attendance]
    lines = good.split(b"\n")
    for index in range(2, len(lines) - 1):
        variants.append(b"\n".join(lines[:index] + lines[index + 1:]))  # one element left out
        variants.append(b"\n".join(lines[:index] + [lines[index], lines[index]] + lines[index + 1:]))  # twice
        variants.append(b"\n".join(lines[:index - 1] + [lines[index], lines[index - 1]] + lines[index + 1:]))
        tag = lines[index].split(b">")[0][1:]
        for text in (b"", b" ", b"x", b"-1", b"1.005", b"&amp;", b"<Inner/>", b"  2026-10-05 ", b"true ", b"0",
                     b"\xd0\xbd", b"<FivePoint>5</FivePoint><Ten>5</Ten>", b"<!-- c --><FivePoint>4</FivePoint>",
                     b"<Special>\xd0\xbe\xd1\x81\xd0\xb2</Special>", b"<FivePoint/>", b"<Bad>5</Bad>"):
            variants.append(b"\n".join(lines[:index] + [b"<%s>%s</%s>" % (tag, text, tag)] + lines[index + 1:]))
    variants += [
        good.replace(b"<Version>", b"<!-- a comment --><?pi x?><Version>"),
        good.replace(b"</GradePosted>", b"<Extra>1</Extra></GradePosted>"),
        good.replace(b"</GradePosted>", b"<Extra xmlns='urn:other'>1</Extra></GradePosted>"),
        good.replace(b'xmlns="urn://ejx/events/1"', b'xmlns="urn:other"'),
        good.replace(b"<Weight>", b"<Weight xmlns='urn:other'>"),
        good.replace(b"GradePosted", b"GradeErased"),
        good.replace(b"<Weight>1.5</Weight>", b"<Weight>10.5</Weight>"),
        good.replace(b"<Weight>1.5</Weight>", b"<Weight>\n 2.25\t</Weight>"),
        good.replace(b"<Weight>1.5</Weight>", b"<Weight>\xc2\xa01.5</Weight>"),
        good.replace(b"<LessonDate>", b"<LessonDate>\xe2\x80\x83"),
        good.replace(b"<Comment>ok</Comment>", b"<Comment>  </Comment>"),
        good.replace(b"<Comment>ok</Comment>", b"<Comment><![CDATA[a & b]]></Comment>"),
        good.replace(b"<StudentId>st-77k3f9q2m</StudentId>", b"<StudentId>12345678901</StudentId>"),
        good.replace(b"<Mark>", b"<Mark>x").replace(b"</FivePoint>", b"</FivePoint>y"),
        good.replace(b"<FivePoint>5</FivePoint>", b"<FivePoint>5<b/></FivePoint>"),
        good.replace(b'<GradePosted xmlns="urn://ejx/events/1">',
                     b'<e:GradePosted xmlns:e="urn://ejx/events/1">').replace(b"</GradePosted>", b"</e:GradePosted>"),
        homework.replace(b"<DueDate>2026-10-06</DueDate>", b"<DueDate>2026-10-04</DueDate>"),
        attendance.replace(b"<Status>late</Status>", b"<Status>present</Status>"),
        attendance.replace(b"<Status>late</Status>", b"<Status> late</Status>"),
        attendance.replace(b"<MinutesLate>5</MinutesLate>", b"<MinutesLate>241</MinutesLate>"),
        b'<EventBatch xmlns="urn://ejx/events/1">' + good.split(b"\n", 1)[1] + b"</EventBatch>",
        b'<EventBatch xmlns="urn://ejx/events/1"></EventBatch>',
        b'<EventBatch xmlns="urn:other">' + good.split(b"\n", 1)[1] + b"</EventBatch>",
        b'<EventBatch xmlns="urn://ejx/events/1">' + good.split(b"\n", 1)[1]
        + homework.split(b"\n", 1)[1].replace(b"<Text>", b"<Text><i/>") + b"</EventBatch>",
    ]
    return variants


def test_event_from_xml_and_events_from_xml_refuse_like_the_reference():
    checked = 0
    for document in _xml_variants():
        try:
            element = hardened.parse(document)
        except Exception:  # not well-formed: the parser's business, not the model's
            continue
        checked += 1
        for plain in (element, ET.fromstring(document)):
            assert outcome(lambda: event_from_xml(plain)) == outcome(lambda: Reference.event_from_xml(plain)), \
                document
            assert outcome(lambda: events_from_xml(plain)) == outcome(lambda: Reference.events_from_xml(plain)), \
                document
    assert checked > 300
