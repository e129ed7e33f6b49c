"""The hand-computed journal gives exactly the expected statistics, statuses and e-diaries.

Records go through the analytics consumer's own handler on a real PostgreSQL
(the Kafka round trip is in test_analytics_kafka.py, which reuses
:func:`assert_expected`). Every expected number below was worked out by hand
from tests/fixtures/analytics/journal.py — see the comments.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from aiokafka import ConsumerRecord
from fastapi import FastAPI

from broker.access.credentials import Kind
from broker.analytics.api import MonitoringOptions, monitoring_router
from broker.xml.schemas import Schemas
from consumers.analytics import AnalyticsConsumer, Outcome
from tests import access_support
from tests.fixtures.analytics.journal import AS_OF, JOURNAL, Delivery, headers, register

SCHEMAS = Schemas.load()


def record(delivery: Delivery, offset: int) -> ConsumerRecord:
    value = delivery.event.to_xml()
    key = delivery.event.school_id.encode()
    return ConsumerRecord("ejx.events.test", 0, offset, 0, 0, key, value, None, len(key), len(value),
                          headers(delivery))


@asynccontextmanager
async def api(pool) -> AsyncIterator[httpx.AsyncClient]:  # noqa: ANN001
    """The monitoring routes, called by an authority of every district, without small-group suppression
    (the journal has a handful of pupils; suppression has tests of its own in tests/security)."""
    app = FastAPI()
    app.include_router(monitoring_router(pool=pool, gate=access_support.gate(pool), clock=lambda: AS_OF,
                                         options=MonitoringOptions(min_group=1)))
    authority = await access_support.token(pool, Kind.AUTHORITY, f"ministry-{uuid.uuid4().hex[:6]}")
    async with access_support.client(app, authority) as client:
        yield client


async def snapshot(pool) -> dict[str, list]:  # noqa: ANN001
    """Every analytics table, row by row, for before/after comparisons."""
    tables = ("school_activity", "school_activity_daily", "diary_grades", "diary_attendance", "diary_homework",
              "diary_term_grades")
    return {t: [tuple(r) for r in await pool.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in tables}


# ---- what the journal must give (hand-computed) ----

# sch-001 events, one per distinct key (the repeated g1 and the TestMessage excluded):
#   tg1 (01-10); g7 v1, v3, v2 (03-08); g6 v2, v1 + a5 v2, v1 (03-05); g5, a2, a4, hw2 (03-06); g4 (03-07);
#   g1, g2 v1, g2 v2, g3 v1, g3 v2, a1, a3, hw1, hw3 (03-09)  → 22 events, 21 inside the 14-day window.
# Timeliness (≤ 1 day after the lesson) over current grades: g7 0d, g6 0d, g5 0d, g4 1d, g1 0d timely;
#   g2 7d late; g3 retracted → 5 of 6.
WINDOW = [f"2026-02-{d}" for d in range(25, 29)] + [f"2026-03-{d:02d}" for d in range(1, 11)]
SCH1_DAILY = dict.fromkeys(WINDOW, 0) | {"2026-03-05": 4, "2026-03-06": 4, "2026-03-07": 1, "2026-03-08": 3,
                                         "2026-03-09": 9}
SCH2_DAILY = dict.fromkeys(WINDOW, 0) | {"2026-03-01": 3}
EXPECTED_SCHOOLS = [
    # ordered by district, then school
    {"school_id": "sch-003", "name": "Лицей № 3", "district": "Северный", "vendor_id": "dnevnik-plus",
     "status": "never_connected", "first_event_at": None, "last_event_at": None, "events": 0,
     "events_per_day": 0.0, "daily": dict.fromkeys(WINDOW, 0), "grades": 0, "timely_grades": 0, "timeliness": None,
     "last_vendor_id": None},
    {"school_id": "sch-001", "name": "Гимназия № 1", "district": "Центральный", "vendor_id": "dnevnik-plus",
     "status": "live", "first_event_at": "2026-01-10T09:00:00+00:00", "last_event_at": "2026-03-09T12:00:00+00:00",
     "events": 22, "events_per_day": 1.5, "daily": SCH1_DAILY, "grades": 6, "timely_grades": 5,
     "timeliness": 0.8333, "last_vendor_id": "dnevnik-plus"},
    # silent: last event 9 days before AS_OF; h2 was posted 4 days after its lesson
    {"school_id": "sch-002", "name": "Школа № 2", "district": "Центральный", "vendor_id": "shkola-online",
     "status": "silent", "first_event_at": "2026-03-01T09:00:00+00:00", "last_event_at": "2026-03-01T09:10:00+00:00",
     "events": 3, "events_per_day": 0.2143, "daily": SCH2_DAILY, "grades": 2, "timely_grades": 1,
     "timeliness": 0.5, "last_vendor_id": "shkola-online"},
]

# Current grades: sch-001 MATH 5А T3 = g7 5 (3→5, the late v2 «4» ignored), g6 5 (correction before posting),
# g1 5 (once, though sent twice), g2 3 (2→3); g3 retracted; the TestMessage «2» nowhere.
# sch-001 RUS 5А T3 = g5 незач, g4 зач. sch-002 PHYS 7Б T3 = h1 4, h2 5.
GROUPS_ALL = [
    {"district": "Центральный", "school": "sch-001", "subject": "MATH", "class_unit": "5А", "term": "T3",
     "count": 4, "mean_five_point": 4.5, "distribution": {"5": 3, "3": 1}, "passed": 0, "failed": 0,
     "pass_share": None, "attendance_marks": None, "attendance_rate": None, "suppressed": False},
    {"district": "Центральный", "school": "sch-001", "subject": "RUS", "class_unit": "5А", "term": "T3",
     "count": 2, "mean_five_point": None, "distribution": {"зач": 1, "незач": 1}, "passed": 1, "failed": 1,
     "pass_share": 0.5, "attendance_marks": None, "attendance_rate": None, "suppressed": False},
    {"district": "Центральный", "school": "sch-002", "subject": "PHYS", "class_unit": "7Б", "term": "T3",
     "count": 2, "mean_five_point": 4.5, "distribution": {"5": 1, "4": 1}, "passed": 0, "failed": 0,
     "pass_share": None, "attendance_marks": None, "attendance_rate": None, "suppressed": False},
]
# Attendance: sch-001 a1 present, a2 late, a3 absent, a4 ill, a5 present (v2 beats the late v1 absent) → 3 of 5;
# sch-002 b1 present → 1 of 1. Five-point marks by school: sch-001 (5+5+5+3)/4, sch-002 (4+5)/2.
GROUPS_BY_SCHOOL = [
    {"school": "sch-001", "count": 6, "mean_five_point": 4.5, "distribution": {"5": 3, "3": 1, "зач": 1, "незач": 1},
     "passed": 1, "failed": 1, "pass_share": 0.5, "attendance_marks": 5, "attendance_rate": 0.6, "suppressed": False},
    {"school": "sch-002", "count": 2, "mean_five_point": 4.5, "distribution": {"5": 1, "4": 1},
     "passed": 0, "failed": 0, "pass_share": None, "attendance_marks": 1, "attendance_rate": 1.0, "suppressed": False},
]
# Центральный: 27 points over 6 five-point marks; 4 of 6 attendance marks attended.
GROUPS_BY_DISTRICT = [
    {"district": "Центральный", "count": 8, "mean_five_point": 4.5,
     "distribution": {"5": 4, "4": 1, "3": 1, "зач": 1, "незач": 1}, "passed": 1, "failed": 1, "pass_share": 0.5,
     "attendance_marks": 6, "attendance_rate": 0.6667, "suppressed": False},
]
# MATH lessons 03-05..03-09: g6, g7, g1 (all 5); g2's lesson (03-02) is outside. No attendance with a subject.
GROUPS_MATH_WEEK = [
    {"school": "sch-001", "count": 3, "mean_five_point": 5.0, "distribution": {"5": 3}, "passed": 0, "failed": 0,
     "pass_share": None, "attendance_marks": None, "attendance_rate": None, "suppressed": False},
]

ANNA_GRADES = [  # by lesson date
    ("g2", "2026-03-02", "MATH", "3", True, "пересдача"),
    ("g6", "2026-03-05", "MATH", "5", True, "пересчёт"),
    ("g5", "2026-03-06", "RUS", "незач", False, None),
    ("g1", "2026-03-09", "MATH", "5", False, None),
]
ANNA_ATTENDANCE = [("2026-03-06", "late", 10), ("2026-03-09", "present", None)]
ANNA_HOMEWORK = [("2026-03-06", "RUS", "Упражнение 34"), ("2026-03-09", "MATH", "№ 125, 126")]  # not 6В's hw3
BORIS_GRADES = [("g4", "2026-03-06", "RUS", "зач", False, None), ("g7", "2026-03-08", "MATH", "5", True,
                                                                  "исправление ошибки")]
BORIS_ATTENDANCE = [("2026-03-05", "present", None), ("2026-03-06", "ill", None), ("2026-03-09", "absent", None)]


def grades_of(diary: dict) -> list[tuple]:
    return [(g["grade_id"], g["lesson_date"], g["subject_code"], g["mark"]["value"], g["corrected"],
             g["correction_reason"]) for g in diary["grades"]]


async def assert_expected(pool) -> None:  # noqa: ANN001
    """The projections hold exactly what the journal means."""
    from broker.analytics.projections.diary import DiaryPeriod, DiaryReader

    async with api(pool) as client:
        body = (await client.get("/v1/monitoring/schools")).json()
        got = [s | {"daily": {d["day"]: d["events"] for d in s["daily"]}} for s in body["schools"]]
        assert got == EXPECTED_SCHOOLS
        assert body["by_district"] == [
            {"district": "Северный", "live": 0, "silent": 0, "never_connected": 1, "total": 1},
            {"district": "Центральный", "live": 1, "silent": 1, "never_connected": 0, "total": 2}]
        silent = (await client.get("/v1/monitoring/schools", params={"status": "silent"})).json()["schools"]
        assert [s["school_id"] for s in silent] == ["sch-002"]
        by_vendor = (await client.get("/v1/monitoring/schools", params={"vendor": "dnevnik-plus"})).json()
        assert [s["school_id"] for s in by_vendor["schools"]] == ["sch-003", "sch-001"]

        assert (await client.get("/v1/analytics/grades")).json()["groups"] == GROUPS_ALL
        assert (await client.get("/v1/analytics/grades", params={"group_by": "school"})).json()["groups"] \
            == GROUPS_BY_SCHOOL
        assert (await client.get("/v1/analytics/grades", params={"group_by": "district",
                                                                 "district": "Центральный"})).json()["groups"] \
            == GROUPS_BY_DISTRICT
        week = await client.get("/v1/analytics/grades", params={"group_by": "school", "subject": "MATH",
                                                                "from": "2026-03-05", "to": "2026-03-09"})
        assert week.json()["groups"] == GROUPS_MATH_WEEK

    reader = DiaryReader(pool)
    anna = await reader.diary("st-anna1")
    assert grades_of(anna) == ANNA_GRADES
    assert [(a["date"], a["status"], a["minutes_late"]) for a in anna["attendance"]] == ANNA_ATTENDANCE
    assert [(h["lesson_date"], h["subject_code"], h["text"]) for h in anna["homework"]] == ANNA_HOMEWORK
    assert [(t["subject_code"], t["term_id"], t["period"], t["mark"]) for t in anna["term_grades"]] == [
        ("MATH", "T2", "quarter", {"scale": "five-point", "value": "4"})]
    # 5–8 March: g6 and g5; a2; hw2 (set 03-06, due 03-10) but not hw1 (set 03-09)
    week = await reader.diary("st-anna1", DiaryPeriod(*map(_day, ("2026-03-05", "2026-03-08"))))
    assert [g[0] for g in grades_of(week)] == ["g6", "g5"]
    assert [a["date"] for a in week["attendance"]] == ["2026-03-06"]
    assert [h["text"] for h in week["homework"]] == ["Упражнение 34"]
    boris = await reader.diary("st-boris2")
    assert grades_of(boris) == BORIS_GRADES
    assert [(a["date"], a["status"], a["minutes_late"]) for a in boris["attendance"]] == BORIS_ATTENDANCE


def _day(text: str):  # noqa: ANN202
    from datetime import date
    return date.fromisoformat(text)


async def test_journal_gives_the_hand_computed_projections(db_settings, db_pool) -> None:  # noqa: ANN001
    await register(db_pool)
    consumer = AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=SCHEMAS)
    outcomes = [await consumer.handle(record(d, offset)) for offset, d in enumerate(JOURNAL)]
    assert outcomes.count(Outcome.DUPLICATE) == 1 and outcomes.count(Outcome.TEST) == 1
    assert outcomes.count(Outcome.APPLIED) == len(JOURNAL) - 2
    await assert_expected(db_pool)


async def test_handling_every_record_again_changes_nothing(db_settings, db_pool) -> None:  # noqa: ANN001
    await register(db_pool)
    consumer = AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=SCHEMAS)
    for offset, delivery in enumerate(JOURNAL):
        await consumer.handle(record(delivery, offset))
    before = await snapshot(db_pool)
    again = [await consumer.handle(record(d, offset)) for offset, d in enumerate(reversed(JOURNAL))]
    assert set(again) == {Outcome.DUPLICATE, Outcome.TEST}
    assert await snapshot(db_pool) == before
    await assert_expected(db_pool)


async def test_a_malformed_record_is_rejected_without_touching_projections(db_settings, db_pool) -> None:  # noqa: ANN001
    consumer = AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=SCHEMAS)
    bad = ConsumerRecord("ejx.events.test", 0, 0, 0, 0, b"sch-001", b"<GradePosted/>", None, 7, 14, [])
    assert await consumer.handle(bad) is Outcome.REJECTED
    assert await db_pool.fetchval("SELECT count(*) FROM inbox") == 0
    assert all(rows == [] for rows in (await snapshot(db_pool)).values())


@pytest.mark.parametrize("accept", ["text/csv", "text/csv, application/json;q=0.5"])
async def test_grades_as_csv(db_settings, db_pool, accept: str) -> None:  # noqa: ANN001
    await register(db_pool)
    consumer = AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=SCHEMAS)
    for offset, delivery in enumerate(JOURNAL):
        await consumer.handle(record(delivery, offset))
    async with api(db_pool) as client:
        answer = await client.get("/v1/analytics/grades", params={"group_by": "school"}, headers={"Accept": accept})
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.text.splitlines() == [
        "school,count,mean_five_point,passed,failed,pass_share,attendance_marks,attendance_rate,"
        "marks_5,marks_4,marks_3,marks_2,marks_1,marks_зач,marks_незач,other_marks,suppressed",
        "sch-001,6,4.5,1,1,0.5,5,0.6,3,0,1,0,0,1,1,0,no",
        "sch-002,2,4.5,0,0,,1,1.0,1,1,0,0,0,0,0,0,no",
    ]


async def test_grade_statistics_are_summarised_and_rendered_off_the_event_loop(db_settings, db_pool,
                                                                                monkeypatch) -> None:  # noqa: ANN001
    """A region's finest grouping is ~10⁵ groups, a second or more of Python: it must not hold every other face."""
    import threading

    from broker.analytics import api as analytics_api
    from broker.analytics.projections import grade_statistics
    await register(db_pool)
    consumer = AnalyticsConsumer(settings=db_settings, pool=db_pool, schemas=SCHEMAS)
    for offset, delivery in enumerate(JOURNAL):
        await consumer.handle(record(delivery, offset))
    threads: dict[str, bool] = {}

    def watched(name, work):  # noqa: ANN001, ANN202
        def run(*args):  # noqa: ANN002, ANN202
            threads[name] = threading.current_thread() is threading.main_thread()
            return work(*args)
        return run
    monkeypatch.setattr(grade_statistics, "summarise", watched("summarise", grade_statistics.summarise))
    monkeypatch.setattr(analytics_api, "_grades_json", watched("json", analytics_api._grades_json))
    monkeypatch.setattr(analytics_api, "grades_csv", watched("csv", analytics_api.grades_csv))
    async with api(db_pool) as client:
        assert (await client.get("/v1/analytics/grades")).json()["groups"] == GROUPS_ALL
        assert (await client.get("/v1/analytics/grades", headers={"Accept": "text/csv"})).status_code == 200
    assert threads == {"summarise": False, "json": False, "csv": False}
