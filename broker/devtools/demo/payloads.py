"""Events as the CSV export and the OneRoster bundle a vendor would send them."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from broker.devtools.simulation import TERM_ID
from broker.domain.model import (
    Event,
    GradeCorrected,
    GradePosted,
    GradeRetracted,
    event_to_dict,
)


def csv_row(event: Event) -> dict[str, object]:
    """The CSV export's columns are the canonical field names; the mark is split in two."""
    data = event_to_dict(event)
    mark = data.pop("mark", None)
    if mark:
        data["mark"], data["mark_scale"] = mark["value"], mark["scale"]
    data.pop("event_id", None)
    data.pop("recorded_at", None)
    data.pop("schema_version", None)
    return data


def oneroster_bundle(batch: list[Event], posted: dict[str, GradePosted]) -> dict[str, list[dict]]:
    """Results with the line items, classes and sessions they refer to (OneRoster 1.2 gradebook)."""
    results, line_items, classes = [], {}, {}
    for event in batch:
        grade = posted[event.source_record_id] if isinstance(event, GradePosted) else posted[event.grade_ref]
        class_id = f"cl-{grade.school_id}-{grade.class_unit}-{grade.subject_code}"
        classes[class_id] = {"sourcedId": class_id, "status": "active", "title": grade.class_unit,
                             "classCode": grade.class_unit, "subjectCodes": [grade.subject_code],
                             "school": {"sourcedId": grade.school_id, "type": "org"},
                             "metadata": {"teacherSourcedId": grade.teacher_id}}
        line_items[grade.lesson_id] = {
            "sourcedId": grade.lesson_id, "status": "active", "title": grade.work_type,
            "assignDate": f"{grade.lesson_date.isoformat()}T09:00:00+03:00",
            "class": {"sourcedId": class_id, "type": "class"},
            "school": {"sourcedId": grade.school_id, "type": "org"},
            "gradingPeriod": {"sourcedId": TERM_ID, "type": "academicSession"},
            "resultValueMin": 1.0, "resultValueMax": 5.0}
        result = {"sourcedId": grade.source_record_id, "status": "active",
                  "dateLastModified": zulu(event.occurred_at),
                  "lineItem": {"sourcedId": grade.lesson_id, "type": "lineItem"},
                  "student": {"sourcedId": grade.student_id, "type": "user"},
                  "scoreStatus": "fully graded", "scoreDate": grade.lesson_date.isoformat(),
                  "metadata": {"actorSourcedId": event.actor_id}}
        if isinstance(event, GradeRetracted):
            result.update(status="tobedeleted", comment=event.reason, score=float(grade.mark.value))
        else:
            result["score"] = float(event.mark.value)
            if isinstance(event, GradeCorrected):
                result["comment"] = event.reason
        results.append(result)
    session = {"sourcedId": TERM_ID, "status": "active", "title": "2 четверть", "type": "gradingPeriod",
               "startDate": "2026-11-05", "endDate": "2026-12-28", "schoolYear": "2027"}
    return {"results": results, "lineItems": list(line_items.values()), "classes": list(classes.values()),
            "academicSessions": [session]}


def zulu(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def fault_code(response: httpx.Response) -> str:
    """The fault of a one-event submission: the event's own code when the answer lists events."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    errors = (body.get("details") or {}).get("errors") or []
    if len(errors) == 1 and errors[0].get("code"):
        return str(errors[0]["code"])
    return str(body.get("code", f"HTTP {response.status_code}"))
