"""Value rules per field name, mirroring the simple types of ``schemas/events.xsd``.

The model enforces them too, so an event built from JSON is as clean as one
that passed the schema. A field has the same rule in every event type. Days
and instants must fall within years 1900–2100: an e-journal has no business
outside them, and year 1 or 9999 would overflow the date arithmetic of
monitoring and analytics. A refused value is quoted at most 64 characters
long, so a 5,000-character id is not echoed into answers and logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal

Rule = Callable[[object], str | None]
"""Returns what is wrong with a value, or None."""

_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_BLANK = " \t\r\n"
_MINUTE = timedelta(minutes=1)  # built once: building one costs more than the whole check
FIRST_YEAR, LAST_YEAR = 1900, 2100
_SHOWN = 64


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}… ({len(str(value))} characters)"
_CENT = Decimal("0.01")


def _pattern(regex: str, what: str) -> Rule:
    compiled = re.compile(regex)

    def rule(value: object) -> str | None:
        if not compiled.fullmatch(value):  # type: ignore[arg-type]
            return f"{_shown(value)} is not {what}"
        return None
    return rule


def _text(max_length: int, *, one_line: bool = False) -> Rule:
    def rule(value: object) -> str | None:
        assert isinstance(value, str)
        if not value.strip(_BLANK):
            return "must not be blank"
        if len(value) > max_length:
            return f"is {len(value)} characters, longer than {max_length}"
        if _XML_UNSAFE.search(value):
            return "holds a control character XML cannot carry"
        if one_line and ("\n" in value or "\r" in value or value != value.strip(_BLANK)):
            return "must be one line without surrounding blanks"
        return None
    return rule


def _range(low: int, high: int) -> Rule:
    def rule(value: object) -> str | None:
        return None if low <= value <= high else f"{value} is outside {low}..{high}"  # type: ignore[operator]
    return rule


def _day(value: object) -> str | None:
    assert isinstance(value, date)
    return None if FIRST_YEAR <= value.year <= LAST_YEAR else f"{value} is outside years {FIRST_YEAR}–{LAST_YEAR}"


def _instant(value: object) -> str | None:
    assert isinstance(value, datetime)
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        return f"{value.isoformat()} is outside years {FIRST_YEAR}–{LAST_YEAR}"
    offset = value.utcoffset()
    if offset is None:
        return "must carry a timezone offset"
    if offset % _MINUTE:
        return "offset must be whole minutes"
    return None


def _academic_year(value: object) -> str | None:
    problem = _year_shape(value)
    if problem:
        return problem
    first, second = str(value).split("-")
    return None if int(second) == int(first) + 1 else f"{value!r}: the second year must follow the first"


def _weight(value: object) -> str | None:
    assert isinstance(value, Decimal)
    if not value.is_finite() or not 0 < value <= 10:
        return f"{value} is outside (0, 10]"
    if value != value.quantize(_CENT):
        return f"{value} has more than two decimal places"
    return None


_year_shape = _pattern(r"20[0-9]{2}-20[0-9]{2}", "an academic year like 2026-2027")
_pseudonymous = _pattern(
    r"(?=.{8,72}$)[a-z]{1,8}-[0-9a-z]*([a-z][0-9a-z]*[0-9]|[0-9][0-9a-z]*[a-z])[0-9a-z]*",
    "a pseudonymous id (prefix-token mixing letters and digits, e.g. st-77k3f9q2m; never a name or SNILS)")
_record_id = _pattern(r"[!-~]{1,128}", "a record id (1-128 printable ASCII characters, no spaces)")

RULES: dict[str, Rule] = {
    "schema_version": _pattern(r"1\.[0-9]{1,3}", "a version 1 schema version like 1.0"),
    "source_system": _pattern(r"[a-z0-9][a-z0-9-]{1,63}", "a vendor mnemonic like dnevnik-plus"),
    "source_record_id": _record_id,
    "version": _range(1, 2**63 - 1),
    "occurred_at": _instant,
    "recorded_at": _instant,
    "school_id": _pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "a school id"),
    "academic_year": _academic_year,
    "actor_id": _pseudonymous,
    "student_id": _pseudonymous,
    "teacher_id": _pseudonymous,
    "class_unit": _pattern(r"(1[01]|[1-9])(-?[А-ЯЁA-Z][А-ЯЁA-Z0-9-]{0,14})?", "a class like 5А or 10Б"),
    "subject_code": _pattern(r"[A-Z0-9][A-Z0-9_.-]{0,31}", "a subject code like MATH"),
    "lesson_id": _record_id,
    "lesson_date": _day,
    "date": _day,
    "due_date": _day,
    "term_id": _record_id,
    "grade_ref": _record_id,
    "work_type": _text(100, one_line=True),
    "weight": _weight,
    "minutes_late": _range(1, 240),
    "comment": _text(1000),
    "reason": _text(500),
    "text": _text(10_000),
}
"""Value rules by field name; fields without one are checked by type alone."""
