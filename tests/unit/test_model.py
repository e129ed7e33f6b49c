"""The pure model: marks per scale, field rules, idempotency, XML and JSON round trips."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from broker.domain.model import (
    AttendanceMarked,
    AttendanceStatus,
    GradePosted,
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

MSK = timezone(timedelta(hours=3))
EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "events" / "valid"


def grade(**changes) -> GradePosted:
    fields = dict(
        event_id=uuid.UUID("0b7e3c1a-5d2f-4a8e-9c61-2f4d8e7a1b30"), source_system="dnevnik-plus",
        source_record_id="grade-1", version=1, occurred_at=datetime(2026, 10, 5, 9, 15, tzinfo=MSK),
        recorded_at=datetime(2026, 10, 5, 9, 20, tzinfo=MSK), school_id="sch-77-0412",
        academic_year="2026-2027", actor_id="tc-77b0c3d2", student_id="st-77k3f9q2m", class_unit="5А",
        subject_code="MATH", teacher_id="tc-77b0c3d2", lesson_id="lesson-1", lesson_date=date(2026, 10, 5),
        work_type="Контрольная работа", weight=Decimal("1.5"), mark=Mark(MarkScale.FIVE_POINT, "5"),
        counts_in_average=True, term_id="2026-2027-q1")
    return GradePosted(**{**fields, **changes})


@pytest.mark.parametrize(("scale", "value"), [
    (MarkScale.FIVE_POINT, "1"), (MarkScale.FIVE_POINT, "5"), (MarkScale.PASS_FAIL, "зач"),
    (MarkScale.PASS_FAIL, "незач"), (MarkScale.TEN, "10"), (MarkScale.HUNDRED, "0"),
    (MarkScale.HUNDRED, "100"), (MarkScale.SPECIAL, "осв"), (MarkScale.SPECIAL, "н/а"),
])
def test_mark_admits_the_values_of_its_scale(scale, value):
    assert Mark(scale, value).value == value


@pytest.mark.parametrize(("scale", "value"), [
    (MarkScale.FIVE_POINT, "0"), (MarkScale.FIVE_POINT, "6"), (MarkScale.FIVE_POINT, "зач"),
    (MarkScale.PASS_FAIL, "5"), (MarkScale.TEN, "0"), (MarkScale.TEN, "11"), (MarkScale.HUNDRED, "101"),
    (MarkScale.HUNDRED, "07"), (MarkScale.SPECIAL, "зач"), (MarkScale.FIVE_POINT, " 5"),
])
def test_mark_refuses_values_outside_its_scale(scale, value):
    with pytest.raises(ModelError, match="is not a"):
        Mark(scale, value)


@pytest.mark.parametrize("scale", list(MarkScale))
def test_n_is_attendance_on_every_scale(scale):
    with pytest.raises(ModelError, match="attendance"):
        Mark(scale, "н")


def test_mark_points_only_for_numeric_scales():
    assert Mark(MarkScale.TEN, "8").points == 8
    assert Mark(MarkScale.PASS_FAIL, "зач").points is None
    assert Mark(MarkScale.SPECIAL, "осв").points is None


def test_idempotency_key_is_source_record_and_version():
    assert grade().idempotency_key == "dnevnik-plus/grade-1/1"
    assert grade(version=2).idempotency_key != grade().idempotency_key
    assert grade(event_id=uuid.uuid4()).idempotency_key == grade().idempotency_key


@pytest.mark.parametrize(("field", "value", "message"), [
    ("student_id", "12345678901", "pseudonymous"),
    ("student_id", "123-456-789 01", "pseudonymous"),
    ("teacher_id", "Иванова Мария", "pseudonymous"),
    ("actor_id", "ivanov", "pseudonymous"),
    ("academic_year", "2026-2028", "follow"),
    ("academic_year", "26-27", "academic year"),
    ("version", 0, "outside"),
    ("version", True, "must be int"),
    ("occurred_at", datetime(2026, 10, 5, 9, 15), "timezone"),
    ("lesson_date", datetime(2026, 10, 5, 9, 15, tzinfo=MSK), "must be date"),
    ("event_id", "0b7e3c1a-5d2f-4a8e-9c61-2f4d8e7a1b30", "must be UUID"),
    ("weight", Decimal("0"), "outside"),
    ("weight", Decimal("1.555"), "decimal places"),
    ("class_unit", "15Б", "class"),
    ("work_type", " Ответ", "one line"),
    ("comment", "   ", "blank"),
    ("comment", "bell\x07", "control character"),
    ("mark", Mark(MarkScale.SPECIAL, "осв"), "final-grade"),
])
def test_events_refuse_what_the_schema_refuses(field, value, message):
    with pytest.raises(ModelError, match=message) as caught:
        grade(**{field: value})
    assert caught.value.field == field


def test_minutes_late_only_when_late():
    common = dict(event_id=uuid.uuid4(), source_system="dnevnik-plus", source_record_id="att-1", version=1,
                  occurred_at=datetime(2026, 10, 5, 8, 30, tzinfo=MSK),
                  recorded_at=datetime(2026, 10, 5, 8, 40, tzinfo=MSK), school_id="sch-1",
                  academic_year="2026-2027", actor_id="tc-77b0c3d2", student_id="st-77k3f9q2m",
                  lesson_id="lesson-1", date=date(2026, 10, 5))
    assert AttendanceMarked(**common, status=AttendanceStatus.LATE, minutes_late=5).minutes_late == 5
    with pytest.raises(ModelError, match="only for status late"):
        AttendanceMarked(**common, status=AttendanceStatus.PRESENT, minutes_late=5)


def test_term_grade_takes_special_marks():
    event = TermGradeFinalized(**{f.name: getattr(grade(), f.name) for f in dataclasses.fields(grade())
                                  if f.name in {"event_id", "schema_version", "source_system", "source_record_id",
                                                "version", "occurred_at", "recorded_at", "school_id",
                                                "academic_year", "actor_id", "student_id", "subject_code",
                                                "term_id"}},
                               period=TermPeriod.YEAR, mark=Mark(MarkScale.SPECIAL, "н/а"))
    assert event_from_xml(hardened.parse(event.to_xml())) == event


def test_events_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        grade().version = 2  # type: ignore[misc]


def test_to_xml_writes_the_xsd_order_in_our_namespace():
    root = hardened.parse(grade(comment="Молодец").to_xml())
    assert root.tag == "{urn://ejx/events/1}GradePosted"
    names = [child.tag.rpartition("}")[2] for child in root]
    assert names[:3] == ["EventId", "SchemaVersion", "SourceSystem"]
    assert names[-4:] == ["Mark", "CountsInAverage", "TermId", "Comment"]
    assert root.findtext("{urn://ejx/events/1}Weight") == "1.5"
    assert root.find("{urn://ejx/events/1}Mark/{urn://ejx/events/1}FivePoint").text == "5"


def test_optional_fields_are_left_out_when_unset():
    root = hardened.parse(grade().to_xml())
    assert root.find("{urn://ejx/events/1}Comment") is None


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.xml")), ids=lambda path: path.stem)
def test_xml_and_json_round_trips(path):
    events = events_from_xml(hardened.parse(path.read_bytes()))
    for event in events:
        assert event_from_xml(hardened.parse(event.to_xml())) == event
        assert event_from_dict(event_to_dict(event)) == event
    assert events_from_xml(hardened.parse(batch_to_xml(events))) == events


def test_model_errors_name_line_and_element():
    data = (EXAMPLES / "GradePosted.xml").read_bytes().replace(b"2026-2027<", b"2026-2030<")
    with pytest.raises(ModelError, match=r"line 11, /GradePosted/AcademicYear: academic_year"):
        event_from_xml(hardened.parse(data))


def test_unknown_root_is_an_unknown_event_type():
    with pytest.raises(UnknownEventType):
        event_from_xml(hardened.parse(b'<GradeDeleted xmlns="urn://ejx/events/1"/>'))


def test_event_from_xml_wants_the_namespace():
    with pytest.raises(ModelError, match="namespace"):
        event_from_xml(hardened.parse(b"<GradePosted/>"))


def test_json_shape():
    data = event_to_dict(grade())
    assert data["type"] == "GradePosted"
    assert data["mark"] == {"scale": "five-point", "value": "5"}
    assert data["version"] == 1 and data["counts_in_average"] is True
    assert data["occurred_at"] == "2026-10-05T09:15:00+03:00" and data["weight"] == "1.5"
    assert "comment" not in data


def test_json_accepts_numbers_where_vendors_send_them():
    data = event_to_dict(grade()) | {"weight": 1.5, "mark": {"scale": "five-point", "value": 5}}
    assert event_from_dict(data) == grade()


def test_json_takes_values_already_of_their_kind_as_they_are():
    """What ejx assigns (event_id, recorded_at) goes in as objects, and the model still checks them."""
    event = grade()
    typed = event_to_dict(event) | {"event_id": event.event_id, "recorded_at": event.recorded_at}
    assert event_from_dict(typed) == event
    with pytest.raises(ModelError, match="must carry a timezone offset"):
        event_from_dict(typed | {"recorded_at": datetime(2026, 10, 5, 9, 20)})


@pytest.mark.parametrize(("change", "message"), [
    ({"type": "GradeDeleted"}, "not an event type"),
    ({"grade": "5"}, "unknown fields"),
    ({"version": "1"}, "JSON integer"),
    ({"counts_in_average": "true"}, "JSON boolean"),
    ({"mark": {"scale": "five-point", "value": "н"}}, "attendance"),
    ({"mark": {"scale": "five", "value": "5"}}, "scale"),
    ({"occurred_at": "2026-10-05 09:15"}, "not a valid datetime"),
    ({"event_id": "0B7E3C1A-5D2F-4A8E-9C61-2F4D8E7A1B30"}, "not a valid UUID"),
    ({"school_id": None}, "school_id is missing"),
])
def test_json_is_strict(change, message):
    with pytest.raises(ModelError, match=message):
        event_from_dict(event_to_dict(grade()) | change)


def test_batch_bounds():
    with pytest.raises(ModelError, match="1..1000"):
        batch_to_xml([])
    with pytest.raises(ModelError, match="1..1000"):
        batch_to_xml([grade()] * 1001)


def test_model_imports_no_io_library():
    model_dir = Path(__file__).resolve().parents[2] / "broker" / "domain" / "model"
    for source in model_dir.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        for library in ("lxml", "aiokafka", "asyncpg", "structlog", "httpx", "fastapi"):
            assert f"import {library}" not in text and f"from {library}" not in text, (source.name, library)


@pytest.mark.parametrize("payload", [
    {"type": ["GradePosted"]},
    {"type": {"a": 1}},
])
def test_a_non_string_type_is_an_unknown_event_type_not_a_crash(payload: dict) -> None:
    with pytest.raises(UnknownEventType):
        event_from_dict(payload)


def test_a_non_string_mark_scale_is_a_model_error_not_a_crash() -> None:
    data = event_to_dict(grade())
    data["mark"] = {"scale": ["five-point"], "value": "5"}
    with pytest.raises(ModelError):
        event_from_dict(data)
