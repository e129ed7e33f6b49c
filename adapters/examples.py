"""Example requests for the OpenAPI page: one event of every type, in JSON and in XML.

The XML examples are rendered from the JSON ones through the model, so the two
can never disagree; a unit test validates all of them against the XSD.
"""

from __future__ import annotations

from typing import Any

_COMMON = {
    "schema_version": "1.0",
    "source_system": "dnevnik-plus",
    "occurred_at": "2026-10-14T09:41:00+03:00",
    "school_id": "sch-770001",
    "academic_year": "2026-2027",
    "actor_id": "tc-4f8k2m9q",
}

EVENTS: dict[str, dict[str, Any]] = {
    "GradePosted": {
        "type": "GradePosted", **_COMMON, "source_record_id": "grade-918273", "version": 1,
        "student_id": "st-77k3f9q2m", "class_unit": "7Б", "subject_code": "MATH", "teacher_id": "tc-4f8k2m9q",
        "lesson_id": "lesson-55120", "lesson_date": "2026-10-14", "work_type": "Контрольная работа",
        "weight": 2, "mark": {"scale": "five-point", "value": "5"}, "counts_in_average": True,
        "term_id": "2026-q1", "comment": "Без ошибок",
    },
    "GradeCorrected": {
        "type": "GradeCorrected", **_COMMON, "source_record_id": "grade-918273", "version": 2,
        "grade_ref": "grade-918273", "mark": {"scale": "five-point", "value": "4"},
        "reason": "Ошибка при вводе",
    },
    "GradeRetracted": {
        "type": "GradeRetracted", **_COMMON, "source_record_id": "grade-918273", "version": 3,
        "grade_ref": "grade-918273", "reason": "Оценка выставлена не тому ученику",
    },
    "AttendanceMarked": {
        "type": "AttendanceMarked", **_COMMON, "source_record_id": "att-30301", "version": 1,
        "student_id": "st-77k3f9q2m", "lesson_id": "lesson-55120", "date": "2026-10-14",
        "status": "late", "minutes_late": 7,
    },
    "HomeworkAssigned": {
        "type": "HomeworkAssigned", **_COMMON, "source_record_id": "hw-8841", "version": 1,
        "class_unit": "7Б", "subject_code": "MATH", "teacher_id": "tc-4f8k2m9q",
        "lesson_date": "2026-10-14", "due_date": "2026-10-16", "text": "№ 245, 247 (стр. 61)",
    },
    "TermGradeFinalized": {
        "type": "TermGradeFinalized", **_COMMON, "source_record_id": "term-st-77k3f9q2m-MATH-q1", "version": 1,
        "student_id": "st-77k3f9q2m", "subject_code": "MATH", "term_id": "2026-q1", "period": "quarter",
        "mark": {"scale": "five-point", "value": "5"},
    },
}

ONEROSTER_BUNDLE: dict[str, Any] = {
    "academicSessions": [{"sourcedId": "as-2026-q1", "status": "active",
                          "dateLastModified": "2026-09-01T00:00:00Z", "title": "1 четверть",
                          "type": "gradingPeriod", "startDate": "2026-09-01", "endDate": "2026-10-26",
                          "schoolYear": "2027"}],
    "classes": [{"sourcedId": "cl-7b-math", "status": "active", "dateLastModified": "2026-09-01T00:00:00Z",
                 "title": "Математика 7Б", "classCode": "7Б", "classType": "scheduled",
                 "subjectCodes": ["MATH"], "school": {"sourcedId": "sch-770001", "type": "org"},
                 "terms": [{"sourcedId": "as-2026-q1", "type": "academicSession"}]}],
    "lineItems": [{"sourcedId": "li-5512", "status": "active", "dateLastModified": "2026-10-14T06:00:00Z",
                   "title": "Контрольная работа", "assignDate": "2026-10-14T09:00:00+03:00",
                   "dueDate": "2026-10-14T09:45:00+03:00",
                   "class": {"sourcedId": "cl-7b-math", "type": "class"},
                   "school": {"sourcedId": "sch-770001", "type": "org"},
                   "gradingPeriod": {"sourcedId": "as-2026-q1", "type": "academicSession"},
                   "resultValueMin": 1.0, "resultValueMax": 5.0}],
    "results": [{"sourcedId": "res-1", "status": "active", "dateLastModified": "2026-10-14T06:41:00Z",
                 "lineItem": {"sourcedId": "li-5512", "type": "lineItem"},
                 "student": {"sourcedId": "st-77k3f9q2m", "type": "user"},
                 "scoreStatus": "fully graded", "score": 5.0, "scoreDate": "2026-10-14",
                 "comment": "Без ошибок"}],
    "enrollments": [{"sourcedId": "en-7b-math-tc", "status": "active", "dateLastModified": "2026-09-01T00:00:00Z",
                     "role": "teacher", "primary": True, "user": {"sourcedId": "tc-4f8k2m9q", "type": "user"},
                     "class": {"sourcedId": "cl-7b-math", "type": "class"},
                     "school": {"sourcedId": "sch-770001", "type": "org"}}],
}


def request_body_content() -> dict[str, Any]:
    """OpenAPI ``requestBody.content`` for ``POST /v1/events``, one example per event type."""
    from broker.domain import model  # rendered on demand, at router construction

    json_examples: dict[str, Any] = {name: {"summary": name, "value": event} for name, event in EVENTS.items()}
    json_examples["batch"] = {"summary": "A list of events (up to 1,000)", "value": list(EVENTS.values())}
    xml_examples = {}
    for name, event in EVENTS.items():
        data = {**event, "event_id": "00000000-0000-4000-8000-000000000000",
                "recorded_at": "2026-10-14T09:41:02+03:00"}
        xml_examples[name] = {"summary": name, "value": model.event_from_dict(data).to_xml().decode("utf-8")}
    return {
        "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "maxItems": 1000,
                                                                          "items": {"type": "object"}}]},
                             "examples": json_examples},
        "application/xml": {"schema": {"type": "string", "description": "One event element or an EventBatch "
                                                                         "in namespace urn://ejx/events/1"},
                            "examples": xml_examples},
    }
