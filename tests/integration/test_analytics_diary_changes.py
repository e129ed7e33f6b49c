"""A grade's changes from records of their own, a pupil's homework by class and year, term grades by period.

Each case is one a vendor produces in practice: a correction or a retraction sent
as a source record of its own (versions count per record, so they cannot order it
against the grade's edits), a class name that comes back every year, and a term
grade of an earlier year asked for with a date range.
"""

from __future__ import annotations

import dataclasses
from datetime import date

from broker.analytics.projections.diary import DiaryPeriod, DiaryReader, is_empty
from broker.domain.model import GradeCorrected, GradeRetracted, Mark, MarkScale, TermGradeFinalized, TermPeriod
from broker.xml.schemas import Schemas
from consumers.analytics import AnalyticsConsumer, Outcome
from tests.fixtures.analytics.journal import ANNA, Delivery, _header, homework, posted, register
from tests.integration.test_analytics_projections import grades_of, record


async def apply(settings, pool, events) -> None:  # noqa: ANN001
    await register(pool)
    consumer = AnalyticsConsumer(settings=settings, pool=pool, schemas=Schemas.load())
    outcomes = [await consumer.handle(record(Delivery(event), offset)) for offset, event in enumerate(events)]
    assert outcomes == [Outcome.APPLIED] * len(events)


def correction(record_id: str, version: int, at: str, grade: str, mark: str) -> GradeCorrected:
    return GradeCorrected(**_header("sch-001", record_id, version, at), grade_ref=grade,
                          mark=Mark(MarkScale.FIVE_POINT, mark), reason="исправление")


def retraction(record_id: str, at: str, grade: str) -> GradeRetracted:
    return GradeRetracted(**_header("sch-001", record_id, 1, at), grade_ref=grade,
                          reason="не тому ученику")


def grade(version: int, at: str, mark: str, record_id: str = "g-1"):  # noqa: ANN201
    return posted(record_id, version, at, student=ANNA, subject="MATH", lesson="2026-03-09", mark=mark)


async def test_a_correction_of_its_own_record_overrides_a_grade_edited_to_a_higher_version(
        db_settings, db_pool) -> None:  # noqa: ANN001
    # The grade edited twice (version 3), then corrected by a record of its own at version 1, an hour later.
    await apply(db_settings, db_pool, [grade(1, "2026-03-09T09:00:00", "3"), grade(2, "2026-03-09T09:10:00", "3"),
                                       grade(3, "2026-03-09T09:20:00", "3"),
                                       correction("g-1-fix", 1, "2026-03-09T10:20:00", "g-1", "5")])
    diary = await DiaryReader(db_pool).diary(ANNA)
    assert [(g[0], g[3], g[4]) for g in grades_of(diary)] == [("g-1", "5", True)]


async def test_a_later_correction_record_wins_over_an_earlier_one_edited_twice(
        db_settings, db_pool) -> None:  # noqa: ANN001
    await apply(db_settings, db_pool, [grade(1, "2026-03-09T09:00:00", "3"),
                                       correction("fix-a", 1, "2026-03-09T10:00:00", "g-1", "4"),
                                       correction("fix-a", 2, "2026-03-09T10:05:00", "g-1", "4"),
                                       correction("fix-b", 1, "2026-03-09T12:00:00", "g-1", "5")])
    diary = await DiaryReader(db_pool).diary(ANNA)
    assert [(g[0], g[3]) for g in grades_of(diary)] == [("g-1", "5")]


async def test_an_old_version_arriving_after_a_correction_record_does_not_come_back(
        db_settings, db_pool) -> None:  # noqa: ANN001
    """All three entered in the same minute (a CSV's Дата выставления): v2, the correction, v1 late."""
    def at(event, second: int):  # noqa: ANN001, ANN202 - recorded by ejx in this order
        return dataclasses.replace(event, recorded_at=event.recorded_at.replace(second=second))

    await apply(db_settings, db_pool, [at(grade(2, "2026-03-09T09:00:00", "4"), 1),
                                       at(correction("g-1-fix", 1, "2026-03-09T09:00:00", "g-1", "5"), 2),
                                       at(grade(1, "2026-03-09T09:00:00", "3"), 3)])
    diary = await DiaryReader(db_pool).diary(ANNA)
    assert [(g[0], g[3], g[4]) for g in grades_of(diary)] == [("g-1", "5", True)]


async def test_a_retraction_of_its_own_record_removes_a_grade_edited_to_a_higher_version(
        db_settings, db_pool) -> None:  # noqa: ANN001
    await apply(db_settings, db_pool, [grade(1, "2026-03-09T09:00:00", "3"), grade(2, "2026-03-09T09:10:00", "4"),
                                       retraction("g-1-del", "2026-03-09T11:00:00", "g-1")])
    reader = DiaryReader(db_pool)
    assert grades_of(await reader.diary(ANNA)) == []
    statistics = await db_pool.fetchval("SELECT count(*) FROM diary_grades WHERE NOT retracted")
    assert statistics == 0


async def test_homework_is_that_of_the_pupils_classes_this_year(db_settings, db_pool) -> None:  # noqa: ANN001
    last_year = dataclasses.replace(
        posted("g-old", 1, "2025-03-09T09:00:00", student=ANNA, subject="MATH", lesson="2025-03-09", mark="4",
               class_unit="7Б"), academic_year="2024-2025")
    this_year = posted("g-new", 1, "2026-03-09T09:00:00", student=ANNA, subject="MATH", lesson="2026-03-09",
                       mark="5", class_unit="8Б")
    wrong_pupil = posted("g-wrong", 1, "2026-03-09T09:05:00", student=ANNA, subject="MATH", lesson="2026-03-09",
                         mark="2", class_unit="6В")
    await apply(db_settings, db_pool, [
        last_year, this_year, wrong_pupil, retraction("g-wrong-del", "2026-03-09T09:30:00", "g-wrong"),
        homework("hw-7b", "2026-03-09T10:00:00", class_unit="7Б", subject="MATH", lesson="2026-03-09",
                 due="2026-03-11", text="7Б this year"),
        homework("hw-8b", "2026-03-09T10:01:00", class_unit="8Б", subject="MATH", lesson="2026-03-09",
                 due="2026-03-11", text="8Б this year"),
        homework("hw-6v", "2026-03-09T10:02:00", class_unit="6В", subject="MATH", lesson="2026-03-09",
                 due="2026-03-11", text="6В this year")])
    diary = await DiaryReader(db_pool).diary(ANNA)
    assert [h["text"] for h in diary["homework"]] == ["8Б this year"]


async def test_term_grades_are_those_of_the_academic_years_the_period_touches(
        db_settings, db_pool) -> None:  # noqa: ANN001
    def term(record_id: str, year: str, at: str) -> TermGradeFinalized:
        return TermGradeFinalized(**(_header("sch-001", record_id, 1, at) | {"academic_year": year}), student_id=ANNA,
                                  subject_code="MATH", term_id="Y", period=TermPeriod.YEAR,
                                  mark=Mark(MarkScale.FIVE_POINT, "4"))

    await apply(db_settings, db_pool, [term("tg-2024", "2024-2025", "2025-05-30T09:00:00"),
                                       term("tg-2025", "2025-2026", "2026-05-29T09:00:00")])
    reader = DiaryReader(db_pool)
    october = await reader.diary(ANNA, DiaryPeriod(date(2026, 10, 1), date(2026, 10, 31)))
    assert october["term_grades"] == [] and is_empty(october)  # over SMEV 3: NO_DATA
    spring = await reader.diary(ANNA, DiaryPeriod(date(2026, 3, 1), date(2026, 3, 31)))
    assert [t["academic_year"] for t in spring["term_grades"]] == ["2025-2026"]
    summer = await reader.diary(ANNA, DiaryPeriod(date(2025, 8, 1), date(2025, 9, 30)))
    assert [t["academic_year"] for t in summer["term_grades"]] == ["2024-2025", "2025-2026"]
    everything = await reader.diary(ANNA)
    assert len(everything["term_grades"]) == 2
