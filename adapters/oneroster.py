"""OneRoster 1.2 gradebook → canonical grade events.

A result is one student's score on one line item. It becomes:

* GradePosted — the first version of the result ejx sees;
* GradeCorrected — another version (``dateLastModified`` moved on) of a result
  already posted; ``grade_ref`` is the result's sourcedId;
* GradeRetracted — ``status: tobedeleted``.

``version`` is ``dateLastModified`` in epoch milliseconds: it grows with every
change, so the idempotency key (vendor + result sourcedId + version) is stable
across re-sends and re-imports.

Scales: a ``scoreScale`` whose values map to our marks (``itemValueRHS``) wins;
otherwise ``textScore`` «зач»/«незач» is pass-fail and a numeric score is read
by the line item's ``resultValueMin``/``resultValueMax``: 1–5 (or 2–5, 0–5)
five-point, 0/1–10 ten, 0–100 hundred; any other maximum is converted to
percent on the hundred scale.

Dates: OneRoster timestamps are usually UTC, the schools' days are not: a
timestamp's date (``lesson_date``, the academic year) is taken in the school
time zone (``timezone``, Europe/Moscow by default, as for CSV imports); a
date-only value is the school's date already.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from adapters.ledger import IngestLedger
from adapters.payload import PayloadLimits, json_document
from adapters.problems import Problem
from broker.domain.calendar import SCHOOL_ZONE
from broker.domain.faults import InvalidContent
from broker.domain.model.rules import RULES

log = structlog.get_logger(__name__)

COLLECTIONS = ("results", "lineItems", "classes", "academicSessions", "scoreScales", "categories", "enrollments")
NO_SCORE_STATUSES = frozenset({"not submitted", "exempt"})
PASS_FAIL = {"зач": "зач", "зачет": "зач", "зачёт": "зач", "pass": "зач",
             "незач": "незач", "незачет": "незач", "незачёт": "незач", "fail": "незач"}
OUR_SCALES = frozenset({"five-point", "pass-fail", "ten", "hundred"})
DEFAULT_CORRECTION_REASON = "Изменено в электронном журнале (OneRoster)"
DEFAULT_RETRACTION_REASON = "Удалено в электронном журнале (OneRoster)"


class Unmappable(InvalidContent):
    """A result that cannot become a canonical event (the reason says what is missing)."""


@dataclass
class Mapping:
    """Events (with the index of their result) and the results that could not be mapped."""

    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: int = 0
    """Results without a score (not submitted, exempt): nothing to post."""


class Gradebook:
    """The referenced OneRoster objects, by sourcedId."""

    def __init__(self, collections: dict[str, list[dict[str, Any]]]) -> None:
        self.by_id = {name: {obj["sourcedId"]: obj for obj in collections.get(name) or []
                             if isinstance(obj, dict) and isinstance(obj.get("sourcedId"), str)}
                      for name in COLLECTIONS if name != "results"}
        self.teachers: dict[str, str] = {}
        for enrollment in collections.get("enrollments") or []:
            if isinstance(enrollment, dict) and enrollment.get("role") == "teacher":
                class_id = _ref(enrollment.get("class"))
                if class_id and (class_id not in self.teachers or enrollment.get("primary") in (True, "true")):
                    self.teachers[class_id] = _ref(enrollment.get("user"))

    def get(self, collection: str, sourced_id: str | None, *, what: str) -> dict[str, Any]:
        found = self.by_id[collection].get(sourced_id) if sourced_id else None
        if found is None:
            raise Unmappable(f"{what} {sourced_id!r} is not in {collection}", details={"path": f"/{what}"})
        return found


Run = Callable[..., Awaitable[Any]]
"""How CPU work is run: ``await run(work, *args)`` is ``work(*args)``, wherever it runs."""


async def _inline(work: Callable[..., Any], *args: object) -> Any:
    return work(*args)


def _gradebook(bundle: object) -> tuple[Gradebook, list, list[str]]:
    """The bundle's gradebook, its results, and the results' record ids worth asking the ledger about."""
    if not isinstance(bundle, dict) or not isinstance(bundle.get("results"), list):
        raise InvalidContent("a OneRoster bundle is an object with a 'results' list "
                             "(and the lineItems, classes and academicSessions they refer to)")
    collections = {name: bundle.get(name) or [] for name in COLLECTIONS}
    for name, value in collections.items():
        if not isinstance(value, list):
            raise InvalidContent(f"'{name}' must be a list")
    results = collections["results"]
    record_ids = [r["sourcedId"] for r in results if isinstance(r, dict) and _is_record_id(r.get("sourcedId"))]
    return Gradebook(collections), results, record_ids


@dataclass(frozen=True)
class OneRosterMapper:
    """Maps a gradebook bundle to events in their JSON form; ``ledger`` tells posted from corrected."""

    timezone: ZoneInfo = SCHOOL_ZONE
    """The schools' zone: the date of a timestamp with an offset is its date here."""

    async def map(self, bundle: object, *, source_system: str, ledger: IngestLedger, run: Run = _inline) -> Mapping:
        """``run`` does the CPU work (reading the bundle, mapping its results); the REST face passes
        its parsing threads, so a large bundle never holds the event loop."""
        gradebook, results, record_ids = await run(_gradebook, bundle)
        seen = await ledger.first_versions(source_system, record_ids)
        return await run(self._mapping, results, gradebook, seen)

    def _mapping(self, results: list, gradebook: Gradebook, seen: dict[str, tuple[Any, int]]) -> Mapping:
        mapping = Mapping()
        for index, result in enumerate(results):
            try:
                event = self._event(result, gradebook, seen)
            except Unmappable as fault:
                mapping.problems.append(Problem(index, f"/results/{index}{fault.details.get('path', '')}",
                                                fault.description))
                continue
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as error:
                # JSON gives any value any type: a field of the wrong one is the result's fault, not ours
                # (logged too, should it be ours after all).
                log.info("oneroster.unexpected_value", index=index, error=repr(error))
                mapping.problems.append(Problem(index, f"/results/{index}", (
                    f"a value of an unexpected type or size ({type(error).__name__}: {error}); "
                    "see the OneRoster 1.2 gradebook data model")))
                continue
            if event is None:
                mapping.skipped += 1
                log.info("oneroster.skipped", index=index, sourced_id=result.get("sourcedId"),
                         score_status=result.get("scoreStatus"))
            else:
                mapping.events.append((index, event))
        return mapping

    async def events(self, bundle: object, *, source_system: str, ledger: IngestLedger, run: Run = _inline
                     ) -> list[tuple[int, dict[str, Any]]]:
        """All or nothing (REST): every unmappable result is listed in one InvalidContent."""
        mapping = await self.map(bundle, source_system=source_system, ledger=ledger, run=run)
        if mapping.problems:
            raise InvalidContent(f"{len(mapping.problems)} result(s) cannot be mapped; nothing was accepted",
                                 details={"errors": [p.as_dict() for p in mapping.problems]})
        return mapping.events

    def _event(self, result: object, book: Gradebook, seen: dict[str, tuple[Any, int]]) -> dict[str, Any] | None:
        if not isinstance(result, dict):
            raise Unmappable("a result is an object")
        record_id = _text(result, "sourcedId")
        if not _is_record_id(record_id):
            raise Unmappable("sourcedId must be 1–128 printable ASCII characters without spaces",
                             details={"path": "/sourcedId"})
        modified = _instant(_text(result, "dateLastModified"), "dateLastModified")
        version = int(modified.timestamp() * 1000)
        line_item = book.get("lineItems", _ref(result.get("lineItem")), what="lineItem")
        klass = book.get("classes", _ref(line_item.get("class")), what="class")
        school_id = _ref(line_item.get("school")) or _ref(klass.get("school"))
        if not school_id:
            raise Unmappable("neither the line item nor its class names a school", details={"path": "/lineItem"})
        session_id = (_ref(line_item.get("gradingPeriod")) or _ref(line_item.get("academicSession"))
                      or next((_ref(t) for t in klass.get("terms") or []), None))
        session = book.get("academicSessions", session_id, what="academicSession")
        teacher = (book.teachers.get(klass.get("sourcedId")) or _metadata(line_item, "teacherSourcedId")
                   or _metadata(klass, "teacherSourcedId"))
        actor = _metadata(result, "actorSourcedId") or teacher
        if not actor:
            raise Unmappable("no teacher for the class (enrollments with role teacher, or "
                             "metadata.teacherSourcedId on the line item or class)", details={"path": "/lineItem"})
        common = {
            "source_record_id": record_id, "version": version, "occurred_at": modified.isoformat(),
            "school_id": school_id, "academic_year": _academic_year(session, modified.astimezone(self.timezone)),
            "actor_id": actor,
        }
        if result.get("status") == "tobedeleted":
            return {"type": "GradeRetracted", **common, "grade_ref": record_id,
                    "reason": result.get("comment") or DEFAULT_RETRACTION_REASON}
        if result.get("scoreStatus") in NO_SCORE_STATUSES and result.get("score") is None \
                and not result.get("textScore"):
            return None
        mark = self._mark(result, line_item, book)
        first = seen.get(record_id)
        # Any other version of a posted result corrects it (a late, older one included: consumers
        # order by version); the same version again is the same event, deduplicated by its key.
        if first is not None and first[1] != version:
            return {"type": "GradeCorrected", **common, "grade_ref": record_id, "mark": mark,
                    "reason": result.get("comment") or DEFAULT_CORRECTION_REASON}
        subjects = klass.get("subjectCodes") or []
        if not subjects:
            raise Unmappable("the class has no subjectCodes", details={"path": "/lineItem/class"})
        event = {
            "type": "GradePosted", **common,
            "student_id": _ref(result.get("student")), "class_unit": klass.get("classCode") or klass.get("title"),
            "subject_code": subjects[0], "teacher_id": teacher, "lesson_id": line_item["sourcedId"],
            "lesson_date": _date(line_item.get("assignDate") or result.get("scoreDate") or modified.isoformat(),
                                 self.timezone),
            "work_type": (line_item.get("title") or "Оценка")[:100], "weight": self._weight(line_item, book),
            "mark": mark, "counts_in_average": result.get("scoreStatus") != "exempt", "term_id": session_id,
        }
        if result.get("comment"):
            event["comment"] = result["comment"]
        return event

    def _mark(self, result: dict[str, Any], line_item: dict[str, Any], book: Gradebook) -> dict[str, str]:
        text = str(result.get("textScore") or "").strip()
        score = result.get("score")
        scale_id = _ref(result.get("scoreScale")) or _ref(line_item.get("scoreScale"))
        if scale_id:
            scale = book.get("scoreScales", scale_id, what="scoreScale")
            given = text or _number_text(score)
            for item in scale.get("scoreScaleValue") or []:
                if str(item.get("itemValueLHS")) == given:
                    value = str(item.get("itemValueRHS"))
                    kind = scale.get("type") if scale.get("type") in OUR_SCALES else _scale_of(value)
                    return {"scale": kind, "value": value}
            raise Unmappable(f"score {given!r} is not a value of scoreScale {scale_id!r}",
                             details={"path": "/score"})
        if text.lower() in PASS_FAIL:
            return {"scale": "pass-fail", "value": PASS_FAIL[text.lower()]}
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise Unmappable("the result has neither a numeric score nor a pass/fail textScore",
                             details={"path": "/score"})
        low = line_item.get("resultValueMin")
        high = line_item.get("resultValueMax")
        if (isinstance(low, (int, float)) and score < low) or (isinstance(high, (int, float)) and score > high):
            raise Unmappable(f"score {score} is outside the line item's range {low}–{high}",
                             details={"path": "/score"})
        if high in (5, 5.0) and low in (None, 0, 1, 2):
            return {"scale": "five-point", "value": _whole(score, "five-point")}
        if high in (10, 10.0) and low in (None, 0, 1):
            return {"scale": "ten", "value": _whole(score, "ten")}
        if high in (100, 100.0) and low in (None, 0):
            return {"scale": "hundred", "value": _whole(score, "hundred")}
        if isinstance(high, (int, float)) and high > 0:
            return {"scale": "hundred", "value": str(round(100 * score / high))}
        raise Unmappable("the line item has no resultValueMax and no scoreScale: the scale is unknown",
                         details={"path": "/lineItem"})

    def _weight(self, line_item: dict[str, Any], book: Gradebook) -> float | int:
        category = book.by_id["categories"].get(_ref(line_item.get("category")))
        weight = (category or {}).get("weight")
        if isinstance(weight, (int, float)) and 0 < weight <= 10:
            return weight
        return 1


def read_bundle(directory: Path, *, limits: PayloadLimits = PayloadLimits(max_bytes=256 * 1024 * 1024,
                                                                            max_json_depth=12)
                ) -> dict[str, list[dict[str, Any]]]:
    """A gradebook bundle from DIR: ``<collection>.json`` (a list, or OneRoster's ``{"results": [...]}``
    wrapper) or ``<collection>.csv`` in the OneRoster 1.2 CSV binding."""
    bundle: dict[str, list[dict[str, Any]]] = {}
    for name in COLLECTIONS:
        as_json, as_csv = directory / f"{name}.json", directory / f"{name}.csv"
        if as_json.exists():
            document = json_document(as_json.read_bytes(), limits)
            if isinstance(document, dict):
                document = document.get(name)
            if not isinstance(document, list):
                raise InvalidContent(f"{as_json} holds neither a list nor {{\"{name}\": [...]}}")
            bundle[name] = document
        elif as_csv.exists():
            bundle[name] = list(_csv_objects(as_csv))
    if "results" not in bundle:
        raise InvalidContent(f"{directory} has neither results.json nor results.csv")
    return bundle


# OneRoster CSV columns holding references, and the JSON property they become.
_CSV_REFERENCES = {
    "lineItemSourcedId": ("lineItem", "lineItem"), "studentSourcedId": ("student", "user"),
    "classSourcedId": ("class", "class"), "schoolSourcedId": ("school", "org"),
    "gradingPeriodSourcedId": ("gradingPeriod", "academicSession"),
    "academicSessionSourcedId": ("academicSession", "academicSession"),
    "categorySourcedId": ("category", "category"), "scoreScaleSourcedId": ("scoreScale", "scoreScale"),
    "userSourcedId": ("user", "user"), "parentSourcedId": ("parent", "academicSession"),
    "courseSourcedId": ("course", "course"),
}
_CSV_LISTS = {"subjectCodes", "subjects", "grades", "periods"}
_CSV_NUMBERS = {"score", "resultValueMin", "resultValueMax", "weight"}


def _csv_objects(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        for row in csv.DictReader(file):
            obj: dict[str, Any] = {}
            for column, value in row.items():
                if column is None or value is None or value == "":
                    continue
                if column in _CSV_REFERENCES:
                    name, kind = _CSV_REFERENCES[column]
                    obj[name] = {"sourcedId": value, "type": kind}
                elif column == "termSourcedIds":
                    obj["terms"] = [{"sourcedId": v.strip(), "type": "academicSession"} for v in value.split(",")]
                elif column in _CSV_LISTS:
                    obj[column] = [v.strip() for v in value.split(",") if v.strip()]
                elif column in _CSV_NUMBERS:
                    try:
                        obj[column] = float(value)
                    except ValueError:
                        obj[column] = value  # reported by the mapper
                elif column == "scoreScaleValue":
                    obj[column] = json.loads(value) if value.startswith("[") else [
                        dict(zip(("itemValueLHS", "itemValueRHS"), pair.strip("{} ").split(":", 1), strict=False))
                        for pair in value.split(",")]
                else:
                    obj[column] = value
            yield obj


def _is_record_id(value: object) -> bool:
    """Of the canonical model's form of a record id: nothing else is worth a ledger lookup."""
    return isinstance(value, str) and RULES["source_record_id"](value) is None


def _ref(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("sourcedId")
    return value if isinstance(value, str) and value else None


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise Unmappable(f"{name} is required", details={"path": f"/{name}"})
    return value


def _metadata(obj: dict[str, Any], name: str) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get(name) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) and value else None


def _instant(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Unmappable(f"{name} {value!r} is not an ISO 8601 date-time", details={"path": f"/{name}"}) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _date(value: str, zone: ZoneInfo) -> str:
    """The school's date of ``value``: a moment with an offset is its date in ``zone`` (00:30 Moscow sent
    as 21:30Z is the next day there); a date, or a moment without an offset, is taken as written."""
    try:
        if "T" not in value:
            return date.fromisoformat(value).isoformat()
        moment = datetime.fromisoformat(value)
        return (moment.astimezone(zone) if moment.tzinfo else moment).date().isoformat()
    except ValueError:
        raise Unmappable(f"{value!r} is not an ISO 8601 date", details={"path": "/lineItem/assignDate"}) from None


def _academic_year(session: dict[str, Any], fallback: datetime) -> str:
    """OneRoster's schoolYear is the year the school year ends in (2027 for 2026-2027); without it, the
    year of ``fallback``, a moment already in the school's zone (1 September starts at its midnight)."""
    year = session.get("schoolYear")
    if isinstance(year, (str, int)) and not isinstance(year, bool) and str(year).isascii() and str(year).isdigit():
        end = int(year)
    else:
        end = fallback.year + 1 if fallback.month >= 9 else fallback.year
    return f"{end - 1}-{end}"


def _scale_of(value: str) -> str:
    if value in ("зач", "незач"):
        return "pass-fail"
    number = int(value) if value.isdigit() else -1
    return "five-point" if 1 <= number <= 5 else "ten" if 1 <= number <= 10 else "hundred"


def _number_text(score: object) -> str:
    if isinstance(score, float) and score.is_integer():
        return str(int(score))
    return str(score) if score is not None else ""


def _whole(score: float, scale: str) -> str:
    if float(score) != int(score):
        raise Unmappable(f"score {score} is not a whole mark on the {scale} scale", details={"path": "/score"})
    return str(int(score))
