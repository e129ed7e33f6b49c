"""The schools' calendar: whose days a lesson date, a day's count and "today" are."""

from __future__ import annotations

from zoneinfo import ZoneInfo

SCHOOL_TIMEZONE = "Europe/Moscow"
"""The zone of the schools' days unless an import says otherwise (``--timezone``): lesson dates, the
monitoring's per-day series and its as-of day, and the date of a vendor's timestamp with an offset."""
SCHOOL_ZONE = ZoneInfo(SCHOOL_TIMEZONE)
