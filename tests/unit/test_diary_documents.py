"""The e-diary service's documents: what diary.xsd accepts, and that a diary survives the trip through XML."""

from __future__ import annotations

from datetime import date

import pytest

from broker.domain.faults import InvalidContent, UnknownMessageType
from broker.smev3.diary_documents import (
    DiaryQuery,
    diary_request,
    diary_response,
    read_diary_request,
    read_diary_response,
)
from broker.xml import hardened
from broker.xml.schemas import Schemas

SCHEMAS = Schemas.load()
DIARY = {
    "student_id": "st-anna1", "from": "2026-03-01", "to": "2026-03-31",
    "grades": [{"grade_id": "g2", "school_id": "sch-001", "subject_code": "MATH", "class_unit": "5А",
                "term_id": "T3", "lesson_id": "l2", "lesson_date": "2026-03-02", "work_type": "Контрольная работа",
                "weight": 2.0, "counts_in_average": True, "mark": {"scale": "five-point", "value": "3"},
                "corrected": True, "correction_reason": "пересдача", "teacher_id": "tc-teach1",
                "comment": "первая строка\nвторая"}],
    "attendance": [{"school_id": "sch-001", "lesson_id": "l2", "date": "2026-03-02", "status": "late",
                    "minutes_late": 10}],
    "homework": [{"school_id": "sch-001", "class_unit": "5А", "subject_code": "MATH", "lesson_date": "2026-03-02",
                  "due_date": "2026-03-04", "text": "№ 125,\n\t126"}],
    "term_grades": [{"school_id": "sch-001", "academic_year": "2025-2026", "subject_code": "MATH", "term_id": "T2",
                     "period": "quarter", "mark": {"scale": "five-point", "value": "4"}}],
}


def test_a_request_round_trips_through_the_schema():
    query = DiaryQuery("st-anna1", date(2026, 3, 1), date(2026, 3, 31), "MATH")
    element = hardened.parse(hardened.to_bytes(diary_request(query)))
    SCHEMAS.validate_diary(element, "DiaryRequest")
    assert read_diary_request(element) == query


@pytest.mark.parametrize("pupil", ["Анна Петрова", "anna", "12345678901", "123-456-789 01", "st-anna", "st-1234"])
def test_a_pupil_id_like_a_name_or_a_snils_is_refused_by_the_schema(pupil):
    with pytest.raises(InvalidContent, match="PupilId"):
        SCHEMAS.validate_diary(diary_request(DiaryQuery(pupil)), "DiaryRequest")


def test_a_backwards_range_is_invalid_and_another_root_unknown():
    with pytest.raises(InvalidContent, match="after"):
        read_diary_request(diary_request(DiaryQuery("st-anna1", date(2026, 3, 9), date(2026, 3, 1))))
    with pytest.raises(UnknownMessageType):
        SCHEMAS.validate_diary(diary_request(DiaryQuery("st-anna1")), "DiaryResponse")


def test_a_diary_survives_the_response_on_one_line():
    element = hardened.parse(hardened.to_bytes(diary_response(DiaryQuery("st-anna1", date(2026, 3, 1),
                                                                         date(2026, 3, 31)), DIARY)))
    SCHEMAS.validate_diary(element, "DiaryResponse")
    read = read_diary_response(element)
    grade = read["grades"][0]
    assert (grade["grade_id"], grade["mark"], grade["corrected"], grade["correction_reason"], grade["weight"]) == (
        "g2", {"scale": "five-point", "value": "3"}, True, "пересдача", 2.0)
    assert grade["comment"] == "первая строка вторая"  # signed SMEV content carries no control characters
    assert read["homework"][0]["text"] == "№ 125, 126"
    assert read["attendance"] == DIARY["attendance"]
    assert read["term_grades"] == DIARY["term_grades"]
    assert (read["student_id"], read["from"], read["to"], read["subject_code"]) == (
        "st-anna1", "2026-03-01", "2026-03-31", None)
