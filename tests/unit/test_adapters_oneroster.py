"""OneRoster 1.2 gradebook → canonical events, from a bundle hand-written after the 1.2 spec."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from adapters.oneroster import OneRosterMapper, read_bundle
from broker.domain.faults import InvalidContent

BUNDLES = Path(__file__).parent.parent / "fixtures" / "adapters" / "oneroster"
COMMON = {"school_id": "sch-770001", "academic_year": "2026-2027"}


class LedgerSeen:
    """The ledger's one query the mapper makes, over a fixed set of already-posted results."""

    def __init__(self, seen: dict[str, int] | None = None) -> None:
        self.seen = seen or {}

    async def first_versions(self, source_system, record_ids):
        return {rid: ("event-id", version) for rid, version in self.seen.items() if rid in record_ids}


def ms(iso: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


EXPECTED = [
    (0, {"type": "GradePosted", **COMMON, "source_record_id": "res-1", "version": ms("2026-10-14T06:41:00+00:00"),
         "occurred_at": "2026-10-14T06:41:00+00:00", "actor_id": "tc-4f8k2m9q",
         "student_id": "st-77k3f9q2m", "class_unit": "7Б", "subject_code": "MATH", "teacher_id": "tc-4f8k2m9q",
         "lesson_id": "li-5512", "lesson_date": "2026-10-14", "work_type": "Контрольная работа", "weight": 1,
         "mark": {"scale": "five-point", "value": "5"}, "counts_in_average": True, "term_id": "as-2026-q1",
         "comment": "Без ошибок"}),
    (1, {"type": "GradePosted", **COMMON, "source_record_id": "res-2", "version": ms("2026-10-15T07:50:00+00:00"),
         "occurred_at": "2026-10-15T07:50:00+00:00", "actor_id": "tc-9p3w7e1r",
         "student_id": "st-77k3f9q2m", "class_unit": "7Б", "subject_code": "PE", "teacher_id": "tc-9p3w7e1r",
         "lesson_id": "li-5513", "lesson_date": "2026-10-15", "work_type": "Норматив: бег 60 м", "weight": 1,
         "mark": {"scale": "pass-fail", "value": "зач"}, "counts_in_average": True, "term_id": "as-2026-q1"}),
    (2, {"type": "GradePosted", **COMMON, "source_record_id": "res-3", "version": ms("2026-10-16T08:00:00+00:00"),
         "occurred_at": "2026-10-16T08:00:00+00:00", "actor_id": "tc-4f8k2m9q",
         "student_id": "st-8m2k4p7x", "class_unit": "7Б", "subject_code": "MATH", "teacher_id": "tc-4f8k2m9q",
         "lesson_id": "li-5514", "lesson_date": "2026-10-16", "work_type": "Тест (20 баллов)", "weight": 1,
         "mark": {"scale": "hundred", "value": "85"}, "counts_in_average": True, "term_id": "as-2026-q1"}),
    (3, {"type": "GradeRetracted", **COMMON, "source_record_id": "res-4",
         "version": ms("2026-10-17T08:00:00+00:00"), "occurred_at": "2026-10-17T08:00:00+00:00",
         "actor_id": "tc-4f8k2m9q", "grade_ref": "res-4",
         "reason": "Удалено в электронном журнале (OneRoster)"}),
]


@pytest.mark.parametrize("form", ["json", "csv"])
async def test_a_gradebook_maps_to_posted_retracted_and_skips_unscored(form):
    mapping = await OneRosterMapper().map(read_bundle(BUNDLES / form), source_system="dnevnik-plus",
                                          ledger=LedgerSeen())
    assert mapping.problems == []
    assert mapping.skipped == 1  # res-5: not submitted
    assert mapping.events == EXPECTED


async def test_a_later_version_of_a_posted_result_is_a_correction():
    bundle = read_bundle(BUNDLES / "json")
    seen = LedgerSeen({"res-1": ms("2026-10-14T06:00:00+00:00")})
    [(index, event)] = [pair for pair in (await OneRosterMapper().map(
        bundle, source_system="dnevnik-plus", ledger=seen)).events if pair[0] == 0]
    assert event == {"type": "GradeCorrected", **COMMON, "source_record_id": "res-1",
                     "version": ms("2026-10-14T06:41:00+00:00"), "occurred_at": "2026-10-14T06:41:00+00:00",
                     "actor_id": "tc-4f8k2m9q", "grade_ref": "res-1",
                     "mark": {"scale": "five-point", "value": "5"}, "reason": "Без ошибок"}


async def test_the_same_version_again_maps_to_the_same_event():
    bundle = read_bundle(BUNDLES / "json")
    seen = LedgerSeen({"res-1": ms("2026-10-14T06:41:00+00:00")})
    events = dict((await OneRosterMapper().map(bundle, source_system="dnevnik-plus", ledger=seen)).events)
    assert events[0] == EXPECTED[0][1]  # same key: deduplicated downstream, not a correction


async def test_unmappable_results_are_all_listed_with_their_index():
    bundle = read_bundle(BUNDLES / "json")
    bundle["results"] = [
        {**bundle["results"][0], "lineItem": {"sourcedId": "li-missing"}},
        {**bundle["results"][0], "score": 4.5},
        {**bundle["results"][2], "lineItem": {"sourcedId": "li-5512"}, "score": 7.0},
        {**bundle["results"][1], "textScore": "Z"},
        {**bundle["results"][0], "dateLastModified": "вчера"},
    ]
    with pytest.raises(InvalidContent) as caught:
        await OneRosterMapper().events(bundle, source_system="dnevnik-plus", ledger=LedgerSeen())
    errors = caught.value.details["errors"]
    assert sorted(e["index"] for e in errors) == [0, 1, 2, 3, 4]
    assert any("li-missing" in e["reason"] for e in errors)


async def test_a_bundle_without_results_is_invalid():
    with pytest.raises(InvalidContent):
        await OneRosterMapper().map({"lineItems": []}, source_system="v", ledger=LedgerSeen())


async def test_an_older_version_arriving_late_is_a_correction_not_a_second_posting():
    bundle = read_bundle(BUNDLES / "json")
    seen = LedgerSeen({"res-1": ms("2026-10-15T00:00:00+00:00")})
    events = dict((await OneRosterMapper().map(bundle, source_system="dnevnik-plus", ledger=seen)).events)
    assert events[0]["type"] == "GradeCorrected"


def with_values(bundle: dict, collection: str, **values) -> dict:
    """The bundle with its first object of ``collection`` given ``values``."""
    changed = copy.deepcopy(bundle)
    changed[collection][0].update(values)
    return changed


@pytest.mark.parametrize(("collection", "values"), [
    ("lineItems", {"assignDate": 5}),
    ("lineItems", {"title": 5}),
    ("classes", {"subjectCodes": {"MATH": 1}}),
    ("results", {"score": 1e308}),
])
async def test_a_value_of_the_wrong_type_is_a_problem_of_its_result_not_a_crash(collection, values):
    bundle = with_values(read_bundle(BUNDLES / "json"), collection, **values)
    if "score" in values:  # 1e308 / 1e308 on a line item without a mark scale: 100 × score overflows
        bundle["lineItems"][0].update(resultValueMin=0, resultValueMax=1e308)
    with pytest.raises(InvalidContent) as caught:
        await OneRosterMapper().events(bundle, source_system="dnevnik-plus", ledger=LedgerSeen())
    errors = caught.value.details["errors"]
    assert 0 in [e["index"] for e in errors]  # and the other results of that class, for its subjectCodes
    assert all("unexpected type or size" in e["reason"] for e in errors)


async def test_objects_with_ids_that_are_not_text_are_ignored_and_others_still_map():
    bundle = read_bundle(BUNDLES / "json")
    bundle["lineItems"].append({"sourcedId": ["unhashable"]})
    mapping = await OneRosterMapper().map(bundle, source_system="dnevnik-plus", ledger=LedgerSeen())
    assert mapping.events == EXPECTED


async def test_only_record_ids_of_the_canonical_form_reach_the_ledger():
    bundle = read_bundle(BUNDLES / "json")
    bundle["results"][0]["sourcedId"] = "res\x00-1"  # PostgreSQL text refuses NUL: it must never get there
    ledger = LedgerSeen()
    asked = []
    original = ledger.first_versions

    async def recorded(source_system, record_ids):
        asked.extend(record_ids)
        return await original(source_system, record_ids)
    ledger.first_versions = recorded
    mapping = await OneRosterMapper().map(bundle, source_system="dnevnik-plus", ledger=ledger)
    assert "res\x00-1" not in asked and "res-2" in asked
    assert [p.index for p in mapping.problems] == [0]
    assert "printable ASCII" in mapping.problems[0].reason


async def test_the_cpu_work_runs_where_the_caller_says():
    ran = []

    async def run(work, *args):
        ran.append(work.__name__)
        return work(*args)
    mapping = await OneRosterMapper().map(read_bundle(BUNDLES / "json"), source_system="dnevnik-plus",
                                          ledger=LedgerSeen(), run=run)
    assert mapping.events == EXPECTED
    assert ran == ["_gradebook", "_mapping"]
