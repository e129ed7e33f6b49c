"""The e-diary service's documents (``urn://ejx/diary/1``, schemas/diary.xsd): DiaryRequest and DiaryResponse.

Pure lxml, shared by ejx (which reads requests and writes responses) and its reference
requester (which does the opposite), so the two can never disagree on a field. Readers
take elements the schema has already accepted; what XSD 1.0 cannot say (From after To)
is checked here. Free text is written on one line: signed SMEV content carries no
control characters (the SMEV transform and the Java reference disagree on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import partial

from lxml import etree

from broker.domain.faults import InvalidContent
from broker.smev3.wire import clean, el
from broker.xml.schemas import DIARY_NS

REQUEST_ROOT = "DiaryRequest"
RESPONSE_ROOT = "DiaryResponse"

_d = partial(el, DIARY_NS)


@dataclass(frozen=True)
class DiaryQuery:
    """What a requester asks: one pupil (pseudonymous id), the days From..To (open ends), one subject or all."""

    pupil_id: str
    date_from: date | None = None
    date_to: date | None = None
    subject_code: str | None = None


def diary_request(query: DiaryQuery) -> etree._Element:
    """The DiaryRequest a requester puts in MessagePrimaryContent."""
    return _d(REQUEST_ROOT, _d("PupilId", query.pupil_id), *_range(query))


def read_diary_request(element: etree._Element) -> DiaryQuery:
    """The query of a schema-valid DiaryRequest; InvalidContent when its range runs backwards."""
    query = DiaryQuery(pupil_id=_text(element, "PupilId"), date_from=_day(element, "From"),
                       date_to=_day(element, "To"), subject_code=_text(element, "SubjectCode"))
    if query.date_from and query.date_to and query.date_from > query.date_to:
        raise InvalidContent(f"From {query.date_from} is after To {query.date_to}")
    return query


def diary_response(query: DiaryQuery, diary: dict) -> etree._Element:
    """The DiaryResponse of a diary as :class:`~broker.analytics.projections.diary.DiaryReader` reads it."""
    marks = [_d("Mark", _d("GradeId", g["grade_id"]), _d("SchoolId", g["school_id"]),
                _d("SubjectCode", g["subject_code"]), _d("LessonDate", g["lesson_date"]),
                _d("WorkType", _line(g["work_type"])), _d("Weight", _weight(g["weight"])),
                _d("CountsInAverage", _bool(g["counts_in_average"])), _d("Scale", g["mark"]["scale"]),
                _d("Value", g["mark"]["value"]), _d("Corrected", _bool(g["corrected"])),
                _optional("CorrectionReason", g["correction_reason"]), _optional("Comment", g["comment"]))
             for g in diary["grades"]]
    lessons = [_d("Lesson", _d("SchoolId", a["school_id"]), _d("LessonId", a["lesson_id"]), _d("Date", a["date"]),
                  _d("Status", a["status"]), _optional("MinutesLate", a["minutes_late"]))
               for a in diary["attendance"]]
    homework = [_d("Assignment", _d("SchoolId", h["school_id"]), _d("SubjectCode", h["subject_code"]),
                   _d("LessonDate", h["lesson_date"]), _d("DueDate", h["due_date"]), _d("Text", _line(h["text"])))
                for h in diary["homework"]]
    terms = [_d("TermGrade", _d("SchoolId", t["school_id"]), _d("AcademicYear", t["academic_year"]),
                _d("SubjectCode", t["subject_code"]), _d("TermId", t["term_id"]), _d("Period", t["period"]),
                _d("Scale", t["mark"]["scale"]), _d("Value", t["mark"]["value"])) for t in diary["term_grades"]]
    return _d(RESPONSE_ROOT, _d("PupilId", query.pupil_id), *_range(query), _d("Marks", *marks),
              _d("Attendance", *lessons), _d("Homework", *homework), _d("TermGrades", *terms))


def read_diary_response(element: etree._Element) -> dict:
    """A schema-valid DiaryResponse as a dict of the DiaryReader's shape (for the requester's table)."""
    def rows(section: str, item: str) -> list[etree._Element]:
        return list(element.find(f"{{{DIARY_NS}}}{section}").iterfind(f"{{{DIARY_NS}}}{item}"))

    return {
        "student_id": _text(element, "PupilId"), "from": _text(element, "From"), "to": _text(element, "To"),
        "subject_code": _text(element, "SubjectCode"),
        "grades": [{"grade_id": _text(m, "GradeId"), "school_id": _text(m, "SchoolId"),
                    "subject_code": _text(m, "SubjectCode"), "lesson_date": _text(m, "LessonDate"),
                    "work_type": _text(m, "WorkType"), "weight": float(_text(m, "Weight")),
                    "counts_in_average": _text(m, "CountsInAverage") == "true",
                    "mark": {"scale": _text(m, "Scale"), "value": _text(m, "Value")},
                    "corrected": _text(m, "Corrected") == "true", "correction_reason": _text(m, "CorrectionReason"),
                    "comment": _text(m, "Comment")} for m in rows("Marks", "Mark")],
        "attendance": [{"school_id": _text(a, "SchoolId"), "lesson_id": _text(a, "LessonId"),
                        "date": _text(a, "Date"), "status": _text(a, "Status"),
                        "minutes_late": int(_text(a, "MinutesLate")) if _text(a, "MinutesLate") else None}
                       for a in rows("Attendance", "Lesson")],
        "homework": [{"school_id": _text(h, "SchoolId"), "subject_code": _text(h, "SubjectCode"),
                      "lesson_date": _text(h, "LessonDate"), "due_date": _text(h, "DueDate"),
                      "text": _text(h, "Text")} for h in rows("Homework", "Assignment")],
        "term_grades": [{"school_id": _text(t, "SchoolId"), "academic_year": _text(t, "AcademicYear"),
                         "subject_code": _text(t, "SubjectCode"), "term_id": _text(t, "TermId"),
                         "period": _text(t, "Period"), "mark": {"scale": _text(t, "Scale"), "value": _text(t, "Value")}}
                        for t in rows("TermGrades", "TermGrade")],
    }


def _range(query: DiaryQuery) -> tuple[etree._Element | None, ...]:
    return (query.date_from and _d("From", query.date_from.isoformat()),
            query.date_to and _d("To", query.date_to.isoformat()),
            query.subject_code and _d("SubjectCode", query.subject_code))


def _optional(name: str, value: object) -> etree._Element | None:
    return None if value is None or value == "" else _d(name, _line(value))


def _line(value: object) -> str:
    """Free text on one line: control characters (newlines, tabs) become single spaces."""
    return clean(value, lenient=True)


def _weight(value: float) -> str:
    return format(value, ".2f").rstrip("0").rstrip(".")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _text(element: etree._Element, name: str) -> str | None:
    found = element.find(f"{{{DIARY_NS}}}{name}")
    return None if found is None else (found.text or "")


def _day(element: etree._Element, name: str) -> date | None:
    """xs:date collapses whitespace, so the schema has accepted an indented day: read it the same way."""
    text = _text(element, name)
    return None if text is None else date.fromisoformat(text.strip(" \t\r\n"))
