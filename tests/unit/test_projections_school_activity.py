"""School status and the per-day window, from stored facts and an as-of instant."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from broker.analytics.projections.school_activity import (
    SchoolActivity,
    SchoolStatus,
    counts_by_district,
    school_status,
    window,
)

AS_OF = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_status_is_live_until_more_than_n_days_of_silence() -> None:
    assert school_status(None, as_of=AS_OF, silent_after_days=3) is SchoolStatus.NEVER_CONNECTED
    assert school_status(AS_OF - timedelta(days=3), as_of=AS_OF, silent_after_days=3) is SchoolStatus.LIVE
    assert school_status(AS_OF - timedelta(days=3, seconds=1), as_of=AS_OF,
                         silent_after_days=3) is SchoolStatus.SILENT


def test_window_ends_on_the_as_of_moscow_day() -> None:
    late_evening_utc = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)  # 02:30 on 11 March in Moscow
    assert window(late_evening_utc, 3) == [date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 11)]


def _school(school_id: str, district: str, status: SchoolStatus, daily: list[int], grades: int = 0,
            timely: int = 0) -> SchoolActivity:
    days = window(AS_OF, len(daily))
    return SchoolActivity(school_id, school_id, district, "v", status, None, None, sum(daily),
                          list(zip(days, daily, strict=True)), grades, timely, None)


def test_events_per_day_and_timeliness() -> None:
    school = _school("s1", "d", SchoolStatus.LIVE, [0, 3, 0, 1], grades=4, timely=3)
    assert school.events_per_day == 1.0
    assert school.timeliness == 0.75
    assert _school("s2", "d", SchoolStatus.NEVER_CONNECTED, [0, 0]).timeliness is None


def test_counts_by_district() -> None:
    schools = [_school("a", "Север", SchoolStatus.LIVE, [1]), _school("b", "Север", SchoolStatus.SILENT, [0]),
               _school("c", "Юг", SchoolStatus.NEVER_CONNECTED, [0]), _school("d", "Север", SchoolStatus.LIVE, [2])]
    assert counts_by_district(schools) == [
        {"district": "Север", "live": 2, "silent": 1, "never_connected": 0, "total": 3},
        {"district": "Юг", "live": 0, "silent": 0, "never_connected": 1, "total": 1},
    ]
