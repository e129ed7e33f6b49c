"""School activity counts the schools' (Moscow) days, not UTC days, on a real PostgreSQL; status is judged at as-of.

Every event here is recorded between 00:00 and 03:00 Moscow, when the UTC date
is still the day before: the hours that tell the two apart.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from broker.analytics.projections.school_activity import SchoolMonitor, SchoolStatus, window
from broker.xml.schemas import Schemas
from consumers.analytics import AnalyticsConsumer, Outcome
from tests.fixtures.analytics.journal import Delivery, posted, register
from tests.integration.test_analytics_projections import record

SCHEMAS = Schemas.load()
AS_OF = datetime(2026, 3, 5, 23, 0, tzinfo=UTC)  # 02:00 Moscow on 6 March
NIGHT_GRADES = (
    # lesson on 4 March, entered at 01:30 Moscow on 6 March: two days late, not timely
    posted("n1", 1, "2026-03-05T22:30:00", student="st-anna1", subject="MATH", lesson="2026-03-04", mark="5"),
    # lesson on 5 March, entered at 01:40 Moscow on 6 March: one day late, timely
    posted("n2", 1, "2026-03-05T22:40:00", student="st-anna1", subject="MATH", lesson="2026-03-05", mark="4"),
)


async def _consume(settings, pool) -> None:  # noqa: ANN001
    await register(pool)
    consumer = AnalyticsConsumer(settings=settings, pool=pool, schemas=SCHEMAS)
    for offset, event in enumerate(NIGHT_GRADES):
        assert await consumer.handle(record(Delivery(event), offset)) is Outcome.APPLIED


async def _school(pool):  # noqa: ANN001, ANN202
    return next(s for s in await SchoolMonitor(pool).schools(as_of=AS_OF) if s.school_id == "sch-001")


def test_the_window_ends_on_the_moscow_day_of_as_of() -> None:
    assert window(AS_OF, 2) == [date(2026, 3, 5), date(2026, 3, 6)]


async def test_lateness_is_counted_in_moscow_days(db_settings, db_pool) -> None:  # noqa: ANN001
    await _consume(db_settings, db_pool)
    school = await _school(db_pool)
    assert (school.grades, school.timely_grades) == (2, 1)


async def test_events_count_on_their_moscow_day_up_to_the_moscow_today(db_settings, db_pool) -> None:  # noqa: ANN001
    await _consume(db_settings, db_pool)
    days = await db_pool.fetch("SELECT day, events FROM school_activity_daily")
    assert [tuple(d) for d in days] == [(date(2026, 3, 6), 2)]
    school = await _school(db_pool)
    assert school.daily[-2:] == [(date(2026, 3, 5), 0), (date(2026, 3, 6), 2)]


async def test_a_school_judged_before_its_first_event_had_never_connected(db_settings, db_pool) -> None:  # noqa: ANN001
    await _consume(db_settings, db_pool)  # sch-001's first event: 22:30 UTC on 5 March
    before = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
    [school] = [s for s in await SchoolMonitor(db_pool).schools(as_of=before) if s.school_id == "sch-001"]
    assert school.status is SchoolStatus.NEVER_CONNECTED
    assert (await _school(db_pool)).status is SchoolStatus.LIVE  # at AS_OF, 30 minutes after it


async def test_a_school_at_a_past_instant_goes_by_its_events_up_to_then(db_settings, db_pool) -> None:  # noqa: ANN001
    """Events on 6 March (Moscow) and 20 March: on 10 March it had been silent for days, whatever came later."""
    await _consume(db_settings, db_pool)
    later = posted("n3", 1, "2026-03-20T09:00:00", student="st-anna1", subject="MATH", lesson="2026-03-19", mark="5")
    assert await AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=SCHEMAS).handle(
        record(Delivery(later), 2)) is Outcome.APPLIED

    async def status_at(moment: datetime) -> SchoolStatus:
        [school] = [s for s in await SchoolMonitor(db_pool).schools(as_of=moment) if s.school_id == "sch-001"]
        return school.status
    assert await status_at(datetime(2026, 3, 10, 12, 0, tzinfo=UTC)) is SchoolStatus.SILENT
    assert await status_at(datetime(2026, 3, 7, 12, 0, tzinfo=UTC)) is SchoolStatus.LIVE
    assert await status_at(datetime(2026, 3, 21, 12, 0, tzinfo=UTC)) is SchoolStatus.LIVE
