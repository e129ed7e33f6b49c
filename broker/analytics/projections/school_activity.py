"""School activity: is each school's e-journal live, and does it record grades in time?

Written for each newly consumed event (counts, first/last event, events per day);
read with the registry, so schools that never sent anything show up as
``never_connected``. Status and timeliness depend on parameters (N days), so
they are computed at read time from stored facts, never stored themselves.

Days are the schools' days (:data:`SCHOOL_TIMEZONE`), like a lesson date: a grade
entered at 01:30 Moscow belongs to that Moscow day, not to the UTC day before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

import asyncpg

from broker.domain import model
from broker.domain.calendar import SCHOOL_TIMEZONE, SCHOOL_ZONE


class SchoolStatus(StrEnum):
    LIVE = "live"
    SILENT = "silent"
    NEVER_CONNECTED = "never_connected"


@dataclass(frozen=True)
class ActivityOptions:
    """Parameters of the monitoring view; the defaults suit a school week."""

    silent_after_days: int = 3
    """A school whose latest event is older than this many days is silent."""
    timely_within_days: int = 1
    """A grade is timely if recorded at most this many days after its lesson (school days)."""
    window_days: int = 14
    """Days of the per-day event series, ending on the as-of day."""


def school_status(last_event_at: datetime | None, *, as_of: datetime, silent_after_days: int,
                  first_event_at: datetime | None = None) -> SchoolStatus:
    """live / silent / never connected, from the latest event of a school; judged at an as-of before the
    school's first event, it had not connected yet."""
    if last_event_at is None or (first_event_at is not None and first_event_at > as_of):
        return SchoolStatus.NEVER_CONNECTED
    if as_of - last_event_at > timedelta(days=silent_after_days):
        return SchoolStatus.SILENT
    return SchoolStatus.LIVE


def window(as_of: datetime, days: int) -> list[date]:
    """The ``days`` school dates ending on the as-of date, oldest first."""
    last = as_of.astimezone(SCHOOL_ZONE).date()
    return [last - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


@dataclass
class _Tally:
    """One school's share of a batch, folded the way the upsert below merges it into the row."""

    vendor_id: str
    first_event_at: datetime
    last_event_at: datetime
    events: int = 0


async def record_events(conn: asyncpg.Connection, events: Sequence[model.Event]) -> None:
    """Count newly consumed events of their schools (each event once, inside the batch's transaction).

    One statement per table: the batch is folded per school (and per school and
    school day) first. The vendor in force is the ``source_system`` of the latest
    ``recorded_at``, the later-consumed event winning a tie — as if the events
    had been counted one by one in the order given.
    """
    if not events:
        return
    tallies: dict[str, _Tally] = {}
    for event in events:
        tally = tallies.get(event.school_id)
        if tally is None:
            tally = tallies[event.school_id] = _Tally(event.source_system, event.recorded_at, event.recorded_at)
        tally.events += 1
        tally.first_event_at = min(tally.first_event_at, event.recorded_at)
        if event.recorded_at >= tally.last_event_at:
            tally.last_event_at, tally.vendor_id = event.recorded_at, event.source_system
    # Rows are locked in school order (and then by day) whatever the batch, so two analytics
    # processes counting the same schools after a rebalance wait for each other, never deadlock.
    tallies = dict(sorted(tallies.items()))
    await conn.execute(
        """INSERT INTO school_activity AS a (school_id, vendor_id, first_event_at, last_event_at, events)
           SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[])
           ON CONFLICT (school_id) DO UPDATE SET
               vendor_id = CASE WHEN EXCLUDED.last_event_at >= a.last_event_at
                                THEN EXCLUDED.vendor_id ELSE a.vendor_id END,
               first_event_at = least(a.first_event_at, EXCLUDED.first_event_at),
               last_event_at = greatest(a.last_event_at, EXCLUDED.last_event_at),
               events = a.events + EXCLUDED.events""",
        list(tallies), [t.vendor_id for t in tallies.values()], [t.first_event_at for t in tallies.values()],
        [t.last_event_at for t in tallies.values()], [t.events for t in tallies.values()])
    await conn.execute(
        """INSERT INTO school_activity_daily AS d (school_id, day, events)
           SELECT school_id, (recorded_at AT TIME ZONE $3)::date, count(*)
             FROM unnest($1::text[], $2::timestamptz[]) AS e(school_id, recorded_at)
            GROUP BY 1, 2
            ORDER BY 1, 2
           ON CONFLICT (school_id, day) DO UPDATE SET events = d.events + EXCLUDED.events""",
        [event.school_id for event in events], [event.recorded_at for event in events], SCHOOL_TIMEZONE)


@dataclass(frozen=True)
class SchoolActivity:
    """One registry school as monitoring sees it."""

    school_id: str
    name: str
    district: str
    vendor_id: str
    status: SchoolStatus
    first_event_at: datetime | None
    last_event_at: datetime | None
    events: int
    daily: list[tuple[date, int]]
    """Events per school day over the window, oldest first (zeros included)."""
    grades: int
    """Current grades with a known lesson date (timeliness is measured on these)."""
    timely_grades: int
    last_vendor_id: str | None
    """source_system of the most recent event (differs from vendor_id after a switch of vendor)."""

    @property
    def events_per_day(self) -> float:
        return round(sum(n for _, n in self.daily) / len(self.daily), 4) if self.daily else 0.0

    @property
    def timeliness(self) -> float | None:
        return round(self.timely_grades / self.grades, 4) if self.grades else None

    def as_dict(self) -> dict[str, object]:
        return {
            "school_id": self.school_id, "name": self.name, "district": self.district,
            "vendor_id": self.vendor_id, "status": self.status.value,
            "first_event_at": _iso(self.first_event_at), "last_event_at": _iso(self.last_event_at),
            "events": self.events, "events_per_day": self.events_per_day,
            "daily": [{"day": d.isoformat(), "events": n} for d, n in self.daily],
            "grades": self.grades, "timely_grades": self.timely_grades, "timeliness": self.timeliness,
            "last_vendor_id": self.last_vendor_id,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


class SchoolMonitor:
    """Reads school activity for the monitoring API and the dashboard."""

    def __init__(self, pool: asyncpg.Pool, options: ActivityOptions = ActivityOptions()) -> None:
        self._pool = pool
        self.options = options

    async def schools(self, *, as_of: datetime, districts: tuple[str, ...] | None = None,
                      vendor_id: str | None = None, status: SchoolStatus | None = None) -> list[SchoolActivity]:
        """Registry schools (of ``districts`` only, when given) with their activity at ``as_of``."""
        days = window(as_of, self.options.window_days)
        rows = await self._pool.fetch(
            """SELECT s.school_id, s.name, s.district, s.vendor_id,
                      a.vendor_id AS last_vendor_id, a.first_event_at, a.last_event_at,
                      coalesce(a.events, 0) AS events,
                      coalesce(g.grades, 0) AS grades, coalesce(g.timely, 0) AS timely,
                      coalesce(d.daily, '{}') AS daily_days, coalesce(d.counts, '{}') AS daily_counts,
                      (SELECT max(day) FROM school_activity_daily
                        WHERE school_id = s.school_id AND day <= $5) AS last_day_by_as_of
                 FROM schools s
                 LEFT JOIN school_activity a ON a.school_id = s.school_id
                 LEFT JOIN LATERAL (
                      SELECT count(*) AS grades,
                             count(*) FILTER (WHERE (posted_at AT TIME ZONE $6)::date - lesson_date <= $3)
                                 AS timely
                        FROM diary_grades
                       WHERE school_id = s.school_id AND NOT retracted AND lesson_date IS NOT NULL) g ON true
                 LEFT JOIN LATERAL (
                      SELECT array_agg(day ORDER BY day) AS daily, array_agg(events ORDER BY day) AS counts
                        FROM school_activity_daily
                       WHERE school_id = s.school_id AND day BETWEEN $4 AND $5) d ON true
                WHERE ($1::text[] IS NULL OR s.district = ANY($1)) AND ($2::text IS NULL OR s.vendor_id = $2)
                ORDER BY s.district, s.school_id""",
            list(districts) if districts is not None else None, vendor_id, self.options.timely_within_days,
            days[0], days[-1], SCHOOL_TIMEZONE)
        found = []
        for row in rows:
            state = school_status(_latest_by(as_of, row["last_event_at"], row["last_day_by_as_of"]), as_of=as_of,
                                  silent_after_days=self.options.silent_after_days,
                                  first_event_at=row["first_event_at"])
            if status is not None and state is not status:
                continue
            per_day = dict(zip(row["daily_days"], row["daily_counts"], strict=True))
            found.append(SchoolActivity(
                school_id=row["school_id"], name=row["name"], district=row["district"],
                vendor_id=row["vendor_id"], status=state, first_event_at=row["first_event_at"],
                last_event_at=row["last_event_at"], events=row["events"],
                daily=[(d, per_day.get(d, 0)) for d in days], grades=row["grades"],
                timely_grades=row["timely"], last_vendor_id=row["last_vendor_id"]))
        return found


def _latest_by(as_of: datetime, last_event_at: datetime | None, last_day: date | None) -> datetime | None:
    """The school's latest event at ``as_of``: the latest of all, unless it came later (a past as-of). Then only
    days are kept: the end of the latest school day with events up to as-of's day, or as-of itself if sooner,
    so a past as-of's own school day counts whole (its later events as seen by then)."""
    if last_event_at is None or last_event_at <= as_of:
        return last_event_at
    if last_day is None:
        return None
    return min(as_of, datetime.combine(last_day + timedelta(days=1), time(), SCHOOL_ZONE))


def counts_by_district(schools: list[SchoolActivity]) -> list[dict[str, object]]:
    """Schools per status in each district (the dashboard's summary table), districts sorted."""
    table: dict[str, dict[str, int]] = {}
    for school in schools:
        row = table.setdefault(school.district, {s.value: 0 for s in SchoolStatus})
        row[school.status.value] += 1
    return [{"district": district, **counts, "total": sum(counts.values())}
            for district, counts in sorted(table.items())]
