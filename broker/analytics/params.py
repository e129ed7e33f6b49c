"""Query parameters of the authorities' and the portal's API, refused at the door when malformed.

An identifier is at most 64 characters with no control character (a NUL byte
would otherwise reach PostgreSQL and come back as an outage); a day is
``YYYY-MM-DD`` and an instant ISO 8601, both within years 2000–2100, so no
date arithmetic can overflow and no float is taken for a timestamp. Every
refusal is InvalidContent (400, not retriable).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi import Query

from broker.domain.faults import InvalidContent

MAX_IDENTIFIER = 64
IDENTIFIER_PATTERN = r"^[^\x00-\x1f\x7f]+$"
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
INSTANT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?$"
PSEUDONYMOUS_PATTERN = r"^[a-z]{1,8}-[0-9a-z]{1,63}$"
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2100, 12, 31)


def identifier(description: str, **options: Any) -> Any:
    """A query parameter holding a name or id (district, school, vendor, subject)."""
    return Query(None, description=description, min_length=1, max_length=MAX_IDENTIFIER,
                 pattern=IDENTIFIER_PATTERN, **options)


def day_query(description: str, *, alias: str) -> Any:
    return Query(None, alias=alias, description=f"{description} (YYYY-MM-DD, years 2000–2100).",
                 pattern=DAY_PATTERN, examples=["2026-03-01"])


def instant_query(description: str) -> Any:
    return Query(None, description=f"{description} (ISO 8601, years 2000–2100; UTC if no offset).",
                 pattern=INSTANT_PATTERN, examples=["2026-03-10T12:00:00Z"])


def day(text: str | None, name: str) -> date | None:
    """``text`` as a day within the accepted years, or InvalidContent naming the parameter."""
    if text is None:
        return None
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise InvalidContent(f"{name}={text!r} is not a date (YYYY-MM-DD)", details={"path": name}) from None
    _within(value, text, name)
    return value


def instant(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidContent(f"{name}={text!r} is not an ISO 8601 instant", details={"path": name}) from None
    _within(value.date(), text, name)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def period(date_from: date | None, date_to: date | None) -> None:
    if date_from is not None and date_to is not None and date_from > date_to:
        raise InvalidContent(f"from ({date_from}) is after to ({date_to})")


def _within(value: date, text: str, name: str) -> None:
    if not FIRST_DAY <= value <= LAST_DAY:
        raise InvalidContent(f"{name}={text!r} is outside {FIRST_DAY.year}–{LAST_DAY.year}", details={"path": name})
