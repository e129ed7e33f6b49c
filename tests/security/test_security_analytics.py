"""Analytics never identifies a pupil: cells of fewer than EJX_ANALYTICS_MIN_GROUP (5) pupils are left out
of JSON, CSV and the dashboard's data, and differencing two overlapping queries reveals nothing of them."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timezone

import asyncpg

from tests.security.conftest import SCHOOL_A, SCHOOL_B, Faces

_ids = itertools.count()


async def grade(pool: asyncpg.Pool, *, pupil: str, day: date, mark: str, school: str = SCHOOL_A,
                class_unit: str = "5А", subject: str = "MATH") -> None:
    at = datetime(day.year, day.month, day.day, 9, tzinfo=timezone.utc)
    await pool.execute(
        """INSERT INTO diary_grades (source_system, grade_record_id, version, occurred_at, school_id, mark_scale,
                                     mark_value, changed_at, posted_version, posted_at, student_id, class_unit,
                                     subject_code, lesson_date, term_id, change_record_id)
           VALUES ('dnevnik-plus', $1, 1, $2, $3, 'five-point', $4, $2, 1, $2, $5, $6, $7, $8, 'T3', $1)""",
        f"g-{next(_ids)}", at, school, mark, pupil, class_unit, subject, day)


async def attendance(pool: asyncpg.Pool, *, pupil: str, day: date, school: str, status: str = "absent") -> None:
    await pool.execute(
        "INSERT INTO diary_attendance (source_system, source_record_id, version, school_id, student_id, day, status) "
        "VALUES ('dnevnik-plus', $1, 1, $2, $3, $4, $5)", f"a-{next(_ids)}", school, pupil, day, status)


async def seed(pool: asyncpg.Pool) -> None:
    """5А MATH: six pupils in March (shown); one more pupil, alone, in April, a 2 (must stay hidden).
    6Б MATH: two pupils (hidden altogether). School B: attendance of two pupils (hidden)."""
    for n in range(6):
        await grade(pool, pupil=f"st-{n}a5k", day=date(2026, 3, 2 + n), mark="5")
    await grade(pool, pupil="st-lone1x", day=date(2026, 4, 15), mark="2")
    for n in range(2):
        await grade(pool, pupil=f"st-{n}b6q", day=date(2026, 3, 10), mark="3", class_unit="6Б")
    for n in range(6):
        await attendance(pool, pupil=f"st-{n}a5k", day=date(2026, 3, 2), school=SCHOOL_A, status="present")
    for n in range(2):
        await attendance(pool, pupil=f"st-{n}bb9", day=date(2026, 3, 2), school=SCHOOL_B)


def by_class(groups: list[dict]) -> dict[str, dict]:
    return {g["class_unit"]: g for g in groups}


async def test_small_groups_are_suppressed_in_json_and_csv(faces: Faces) -> None:
    await seed(faces.pool)
    async with faces.client("authority") as client:
        body = (await client.get("/v1/analytics/grades", params={"group_by": "school,subject,class_unit"})).json()
        csv = (await client.get("/v1/analytics/grades", params={"group_by": "class_unit"},
                                headers={"Accept": "text/csv"})).text
        schools = (await client.get("/v1/analytics/grades", params={"group_by": "school"})).json()
    assert body["min_group"] == 5 and body["suppressed_groups"] == 2
    five_a, six_b = by_class(body["groups"])["5А"], by_class(body["groups"])["6Б"]
    # the April cell (one pupil, a 2) is not in any figure; the March cell is
    assert (five_a["count"], five_a["distribution"], five_a["suppressed"]) == (6, {"5": 6}, True)
    assert (six_b["count"], six_b["mean_five_point"], six_b["distribution"], six_b["suppressed"]) == (0, None, {}, True)
    rows = {line.split(",")[0]: line for line in csv.splitlines()[1:]}
    assert rows["5А"].startswith("5А,6,5.0,") and rows["5А"].endswith(",yes")
    assert rows["6Б"].startswith("6Б,0,,") and rows["6Б"].endswith(",yes")
    by_school = {g["school"]: g for g in schools["groups"]}
    assert by_school[SCHOOL_A]["attendance_marks"] == 6
    assert by_school[SCHOOL_B]["attendance_marks"] == 0 and by_school[SCHOOL_B]["suppressed"] is True
    assert "st-" not in str(body) + csv + str(schools)


async def test_differencing_two_overlapping_queries_reveals_no_pupil(faces: Faces) -> None:
    await seed(faces.pool)
    shape = {"group_by": "school,subject,class_unit"}
    async with faces.client("authority") as client:
        async def five_a(**period: str) -> dict:
            answer = await client.get("/v1/analytics/grades", params={**shape, **period})
            assert answer.status_code == 200
            return by_class(answer.json()["groups"]).get("5А", {"count": 0, "distribution": {}})

        march_april = await five_a(**{"from": "2026-03-01", "to": "2026-04-30"})
        march = await five_a(**{"from": "2026-03-01", "to": "2026-03-31"})
        # day-level slicing: the filter is widened to whole months, so the answers are the same
        before_last = await five_a(**{"from": "2026-03-01", "to": "2026-03-06"})
        up_to_last = await five_a(**{"from": "2026-03-01", "to": "2026-03-07"})
        april = await five_a(**{"from": "2026-04-01", "to": "2026-04-30"})
        widened = (await client.get("/v1/analytics/grades", params={**shape, "from": "2026-03-03",
                                                                    "to": "2026-03-06"})).json()["filters"]
    assert march_april["distribution"] == march["distribution"] == {"5": 6}  # the lone 2 never shows
    assert before_last == up_to_last
    assert april["count"] == 0
    assert (widened["from"], widened["to"]) == ("2026-03-01", "2026-03-31")
