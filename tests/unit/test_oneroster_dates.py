"""OneRoster timestamps (usually UTC) become the school's dates: lesson_date and the academic year.

The cases are the night hours, when the UTC date is still the day before the
Moscow one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.oneroster import OneRosterMapper, read_bundle

BUNDLE = read_bundle(Path(__file__).parent.parent / "fixtures" / "adapters" / "oneroster" / "json")


class NothingSeen:
    async def first_versions(self, source_system, record_ids):  # noqa: ANN001, ANN201
        return {}


async def first_event(bundle: dict, mapper: OneRosterMapper | None = None) -> dict:
    """The event of res-1 (line item li-5512, session as-2026-q1)."""
    mapping = await (mapper or OneRosterMapper()).map(bundle, source_system="dnevnik-plus", ledger=NothingSeen())
    assert mapping.problems == []
    return dict(mapping.events)[0]


def with_dates(*, assign: str | None = None, modified: str | None = None, school_year: bool = True) -> dict:
    """The bundle with res-1's line item assigned at ``assign`` (None: neither it nor a scoreDate, so the
    lesson date falls back to dateLastModified), changed at ``modified`` (None: as it was)."""
    bundle = copy.deepcopy(BUNDLE)
    line_item, result = bundle["lineItems"][0], bundle["results"][0]
    result.pop("scoreDate")
    if assign is None:
        line_item.pop("assignDate")
    else:
        line_item["assignDate"] = assign
    if modified is not None:
        result["dateLastModified"] = modified
    if not school_year:
        for session in bundle["academicSessions"]:
            session.pop("schoolYear", None)
    return bundle


@pytest.mark.parametrize(("assign", "lesson_date"), [
    ("2026-10-13T21:00:00.000Z", "2026-10-14"),  # 00:00 Moscow
    ("2026-10-14T20:59:59Z", "2026-10-14"),  # 23:59:59 Moscow
    ("2026-10-14T00:30:00+03:00", "2026-10-14"),
    ("2026-10-14", "2026-10-14"),  # a date stays the date
    ("2026-10-14T00:30:00", "2026-10-14"),  # no offset: taken as written
])
async def test_lesson_date_is_the_moscow_date_of_assign_date(assign, lesson_date):
    assert (await first_event(with_dates(assign=assign)))["lesson_date"] == lesson_date


async def test_without_assign_and_score_dates_the_lesson_is_on_the_moscow_day_of_the_change():
    event = await first_event(with_dates(modified="2026-10-15T22:30:00.000Z"))  # 01:30 Moscow, 16 Oct
    assert event["lesson_date"] == "2026-10-16"
    assert event["occurred_at"] == "2026-10-15T22:30:00+00:00"  # the instant itself is unchanged


async def test_without_school_year_a_change_after_moscow_midnight_of_1_september_is_in_the_new_year():
    bundle = with_dates(modified="2026-08-31T21:30:00Z", school_year=False)  # 00:30 Moscow, 1 September
    assert (await first_event(bundle))["academic_year"] == "2026-2027"
    bundle = with_dates(modified="2026-08-31T20:30:00Z", school_year=False)  # 23:30 Moscow, 31 August
    assert (await first_event(bundle))["academic_year"] == "2025-2026"


async def test_the_school_time_zone_is_the_mappers_setting():
    bundle = with_dates(assign="2026-10-13T14:30:00Z")  # 17:30 Moscow, 00:30 Vladivostok next day
    assert (await first_event(bundle))["lesson_date"] == "2026-10-13"
    vladivostok = OneRosterMapper(timezone=ZoneInfo("Asia/Vladivostok"))
    assert (await first_event(bundle, vladivostok))["lesson_date"] == "2026-10-14"
