"""OneRoster 1.2 gradebooks through the import and POST /v1/oneroster/results, on real Kafka and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from adapters.oneroster import OneRosterMapper, read_bundle
from broker.domain import model
from broker.xml import hardened
from tests.integration.ingest_support import (
    VENDOR,
    api,
    bearer,
    ingest_service,
    read_topic,
    register,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

BUNDLE = Path(__file__).parent.parent / "fixtures" / "adapters" / "oneroster" / "json"


@pytest.fixture
def ingest_settings(db_settings, fresh_topic):
    return db_settings.model_copy(update={"events_topic": fresh_topic})


def events_of(records) -> dict[str, model.Event]:
    return {r.headers["idempotency_key"]: model.event_from_xml(hardened.parse(r.value)) for r in records}


async def test_results_become_posted_then_corrected_then_retracted(ingest_settings, db_pool):
    tokens = await register(db_pool)
    bundle = read_bundle(BUNDLE)
    async with ingest_service(ingest_settings, db_pool) as service, api(service, db_pool) as client:
        posted = await client.post("/v1/oneroster/results", json=bundle, headers=bearer(tokens.vendor))
        again = await client.post("/v1/oneroster/results", json=bundle, headers=bearer(tokens.vendor))

        changed = json.loads(json.dumps(bundle))
        changed["results"] = [{**bundle["results"][0], "score": 4.0, "comment": "Пересчитано",
                               "dateLastModified": "2026-10-20T10:00:00.000Z"}]
        corrected = await client.post("/v1/oneroster/results", json=changed, headers=bearer(tokens.vendor))

    assert posted.status_code == 202, posted.text
    assert posted.json()["accepted"] == 4  # res-5 was not submitted: nothing to post
    assert again.json()["duplicates"] == 4 and again.json()["event_ids"] == posted.json()["event_ids"]
    assert corrected.status_code == 202 and corrected.json()["duplicates"] == 0

    events = events_of(await read_topic(ingest_settings, ingest_settings.events_topic))
    assert sorted((e.source_record_id, e.type.value) for e in events.values()) == [
        ("res-1", "GradeCorrected"), ("res-1", "GradePosted"), ("res-2", "GradePosted"),
        ("res-3", "GradePosted"), ("res-4", "GradeRetracted")]
    correction = next(e for e in events.values() if e.type is model.EventType.GRADE_CORRECTED)
    assert correction.grade_ref == "res-1" and correction.mark.value == "4" and correction.reason == "Пересчитано"
    marks = {e.source_record_id: e.mark for e in events.values() if e.type is model.EventType.GRADE_POSTED}
    assert marks == {"res-1": model.Mark(model.MarkScale.FIVE_POINT, "5"),
                     "res-2": model.Mark(model.MarkScale.PASS_FAIL, "зач"),
                     "res-3": model.Mark(model.MarkScale.HUNDRED, "85")}


async def test_unmappable_results_refuse_the_whole_request(ingest_settings, db_pool):
    tokens = await register(db_pool)
    bundle = read_bundle(BUNDLE)
    bundle["results"][1]["lineItem"] = {"sourcedId": "li-nowhere"}
    async with ingest_service(ingest_settings, db_pool) as service, api(service, db_pool) as client:
        answer = await client.post("/v1/oneroster/results", json=bundle, headers=bearer(tokens.vendor))
    assert answer.status_code == 400
    assert [e["index"] for e in answer.json()["details"]["errors"]] == [1]
    assert await read_topic(ingest_settings, ingest_settings.events_topic) == []


@pytest.mark.parametrize("form", ["json", "csv"])
async def test_a_gradebook_directory_imports_once(ingest_settings, db_pool, form):
    await register(db_pool)
    bundle = read_bundle(BUNDLE.parent / form)
    async with ingest_service(ingest_settings, db_pool) as service:
        vendor = await service.registry.vendor(VENDOR)
        for _ in range(2):
            mapping = await OneRosterMapper().map(bundle, source_system=VENDOR, ledger=service.ledger)
            receipts, problems = await service.import_batch(vendor, mapping.events)
            assert problems == [] and len(receipts) == 4
    events = events_of(await read_topic(ingest_settings, ingest_settings.events_topic))
    assert sorted(e.source_record_id for e in events.values()) == ["res-1", "res-2", "res-3", "res-4"]


async def test_oneroster_results_are_json_only(ingest_settings, db_pool):
    tokens = await register(db_pool)
    async with ingest_service(ingest_settings, db_pool) as service, api(service, db_pool) as client:
        answer = await client.post("/v1/oneroster/results", content=b"<results/>",
                                   headers={"Content-Type": "application/xml", **bearer(tokens.vendor)})
        anonymous = await client.post("/v1/oneroster/results", json=read_bundle(BUNDLE))
    assert answer.status_code == 415 and answer.json()["code"] == "InvalidContent"
    assert anonymous.status_code == 401
    assert await read_topic(ingest_settings, ingest_settings.events_topic) == []


async def test_a_bundle_carries_no_more_results_than_a_request_carries_events(ingest_settings, db_pool):
    tokens = await register(db_pool)
    bundle = read_bundle(BUNDLE)
    async with ingest_service(ingest_settings, db_pool) as service, api(service, db_pool) as client:
        limit = service.limits.max_events
        bundle["results"] = [{**bundle["results"][0], "sourcedId": f"res-x{i}"} for i in range(limit + 1)]
        answer = await client.post("/v1/oneroster/results", json=bundle, headers=bearer(tokens.vendor))
    assert answer.status_code == 413
    assert answer.json()["code"] == "InvalidContent" and f"at most {limit}" in answer.json()["description"]
    assert await read_topic(ingest_settings, ingest_settings.events_topic) == []


def night_bundle() -> dict:
    """res-1 lesson at 00:00 Moscow (21:00Z the day before); res-2 without an assign or score date, changed at
    00:30 Moscow on 1 September (21:30Z on 31 August), in a session without a schoolYear."""
    bundle = read_bundle(BUNDLE)
    bundle["lineItems"][0]["assignDate"] = "2026-10-13T21:00:00.000Z"
    del bundle["lineItems"][1]["assignDate"], bundle["results"][1]["scoreDate"]
    bundle["results"][1]["dateLastModified"] = "2026-08-31T21:30:00.000Z"
    for session in bundle["academicSessions"]:
        del session["schoolYear"]
    return bundle


@pytest.mark.parametrize("entry", ["rest", "import"])
async def test_lesson_dates_and_years_are_moscow_ones(ingest_settings, db_pool, entry):
    tokens = await register(db_pool)
    bundle = night_bundle()
    async with ingest_service(ingest_settings, db_pool) as service, api(service, db_pool) as client:
        if entry == "rest":
            answer = await client.post("/v1/oneroster/results", json=bundle, headers=bearer(tokens.vendor))
            assert answer.status_code == 202, answer.text
        else:  # what `ejx import oneroster` does
            mapping = await OneRosterMapper().map(bundle, source_system=VENDOR, ledger=service.ledger)
            _, problems = await service.import_batch(await service.registry.vendor(VENDOR), mapping.events)
            assert mapping.problems == problems == []
    events = events_of(await read_topic(ingest_settings, ingest_settings.events_topic)).values()
    posted = {e.source_record_id: e for e in events if e.type is model.EventType.GRADE_POSTED}
    assert posted["res-1"].lesson_date == date(2026, 10, 14)
    assert (posted["res-2"].lesson_date, posted["res-2"].academic_year) == (date(2026, 9, 1), "2026-2027")
