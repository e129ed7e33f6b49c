"""POST /v1/events against a real Kafka and PostgreSQL: exactly once, all or nothing, documented faults."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime

import pytest
from aiokafka.errors import KafkaConnectionError
from lxml import etree
from structlog.testing import capture_logs

from adapters import examples
from adapters.ingest import Canonicaliser
from adapters.payload import PayloadLimits
from broker.access.registry import Vendor
from broker.domain import model
from broker.infra import kafka
from broker.infra.postgres import create_pool
from broker.xml import hardened
from tests.delivery_support import metric
from tests.integration.ingest_support import (
    OTHER_SCHOOL,
    SCHOOL,
    VENDOR,
    api,
    bearer,
    ingest_service,
    ledger_size,
    read_topic,
    register,
    schemas,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

JSON = {"Content-Type": "application/json"}
XML = {"Content-Type": "application/xml"}


def grade(record: str, *, version: int = 1, school: str = SCHOOL, **changes) -> dict:  # noqa: ANN003
    return {**examples.EVENTS["GradePosted"], "source_record_id": record, "version": version,
            "school_id": school, **changes}


@pytest.fixture
def ingest_settings(db_settings, fresh_topic):
    return db_settings.model_copy(update={"events_topic": fresh_topic})


@pytest.fixture
async def tokens(db_pool):
    return await register(db_pool)


@pytest.fixture
async def service(ingest_settings, db_pool, tokens):
    async with ingest_service(ingest_settings, db_pool) as service:
        yield service


@pytest.fixture
async def client(service, db_pool):
    async with api(service, db_pool) as client:
        yield client


async def assert_nothing_accepted(settings, pool):
    assert await read_topic(settings, settings.events_topic) == []
    assert await ledger_size(pool) == 0


async def test_every_event_type_is_on_the_topic_once_with_key_headers_and_canonical_xml(
        client, tokens, ingest_settings):
    events = [{**event, "school_id": SCHOOL} for event in examples.EVENTS.values()]
    answer = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))

    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["accepted"] == 6 and body["duplicates"] == 0
    records = await read_topic(ingest_settings, ingest_settings.events_topic)
    assert len(records) == 6
    by_id = {r.headers["event_id"]: r for r in records}
    assert set(by_id) == set(body["event_ids"])
    for sent, receipt in zip(events, body["events"], strict=True):
        record = by_id[receipt["event_id"]]
        assert record.key == SCHOOL.encode()
        key = f"{VENDOR}/{sent['source_record_id']}/{sent['version']}"
        assert record.headers == {"event_type": sent["type"], "idempotency_key": key,
                                  "event_id": receipt["event_id"], "source_system": VENDOR}
        event = model.event_from_xml(hardened.parse(record.value))
        assert str(event.event_id) == receipt["event_id"] and event.type.value == sent["type"]


async def test_one_json_event_and_an_xml_batch_are_accepted(client, tokens, ingest_settings):
    ingested_before = metric("ejx_events_ingested_total", vendor=VENDOR, event_type="GradePosted")
    one = await client.post("/v1/events", json=grade("g-1"), headers=bearer(tokens.vendor))
    assert one.status_code == 202, one.text

    vendor = Vendor(VENDOR, datetime.now(UTC))
    canonical, _ = Canonicaliser(schemas()).from_dicts(vendor, enumerate([grade("g-2"), grade("g-3")]))
    batch = etree.Element(f"{{{model.NAMESPACE}}}EventBatch")
    batch.extend(hardened.parse(c.xml) for c in canonical)
    xml = await client.post("/v1/events", content=hardened.to_bytes(batch), headers={**XML, **bearer(tokens.vendor)})
    assert xml.status_code == 202, xml.text
    assert xml.json()["accepted"] == 2

    records = await read_topic(ingest_settings, ingest_settings.events_topic)
    assert sorted(r.headers["idempotency_key"] for r in records) == [f"{VENDOR}/g-{n}/1" for n in (1, 2, 3)]
    assert metric("ejx_events_ingested_total", vendor=VENDOR, event_type="GradePosted") - ingested_before == 3


async def test_the_same_request_twice_is_produced_once_and_answered_with_the_same_ids(
        client, tokens, ingest_settings, db_pool):
    events = [grade("g-1"), grade("g-2"), grade("g-1")]  # a repeat inside the request, too
    first = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))
    second = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))

    assert first.status_code == second.status_code == 202
    assert first.json()["event_ids"] == second.json()["event_ids"]
    assert [e["duplicate"] for e in first.json()["events"]] == [False, False, True]
    assert [e["duplicate"] for e in second.json()["events"]] == [True, True, True]
    assert len(await read_topic(ingest_settings, ingest_settings.events_topic)) == 2
    assert await ledger_size(db_pool) == 2


async def test_a_request_is_logged_in_one_info_line_not_one_per_event(client, tokens):
    events = [grade("g-1"), grade("g-2"), grade("g-1")]
    with capture_logs() as logs:
        answer = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))
    assert answer.status_code == 202, answer.text
    info = [entry for entry in logs if entry["log_level"] == "info" and entry["event"].startswith("ingest.")]
    assert info == [{"event": "ingest.accepted", "log_level": "info", "vendor_id": VENDOR, "events": 3,
                     "produced": 2, "duplicates": 1}]


async def test_concurrent_duplicates_are_produced_once(client, tokens, ingest_settings):
    """Rounds of identical posts at once: the claims race on both unique columns of the ledger."""
    for round_ in range(5):
        events = [grade(f"g-{round_}-{n}") for n in range(4)]
        answers = await asyncio.gather(*(client.post("/v1/events", json=events, headers=bearer(tokens.vendor))
                                         for _ in range(8)))
        assert {a.status_code for a in answers} == {202}, [a.text for a in answers if a.status_code != 202]
        assert len({tuple(a.json()["event_ids"]) for a in answers}) == 1
        assert sum(not e["duplicate"] for a in answers for e in a.json()["events"]) == 4
    assert len(await read_topic(ingest_settings, ingest_settings.events_topic)) == 20


async def test_a_new_version_of_a_record_is_a_new_event(client, tokens, ingest_settings):
    await client.post("/v1/events", json=grade("g-1"), headers=bearer(tokens.vendor))
    answer = await client.post("/v1/events", json=grade("g-1", version=2), headers=bearer(tokens.vendor))
    assert answer.json()["duplicates"] == 0
    assert len(await read_topic(ingest_settings, ingest_settings.events_topic)) == 2


async def test_every_invalid_event_is_listed_and_nothing_is_produced(client, tokens, ingest_settings, db_pool):
    events = [grade("g-1"), grade("g-2", mark={"scale": "five-point", "value": "6"}), grade("g-3"),
              {"type": "GradeLost"}, grade("g-5", student_id="Иванов Иван Иванович")]
    answer = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))

    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "InvalidContent" and body["retriable"] is False
    assert [(e["index"], e["path"]) for e in body["details"]["errors"]] == [
        (1, "/mark"), (3, "/type"), (4, "/student_id")]
    assert all(e["reason"] for e in body["details"]["errors"])
    await assert_nothing_accepted(ingest_settings, db_pool)


async def test_an_xml_event_failing_the_schema_is_refused(client, tokens, ingest_settings, db_pool):
    document = hardened.parse(model.event_from_dict({**grade("g-1"), "event_id": "00000000-0000-4000-8000-000000000000",
                                                    "recorded_at": "2026-10-14T09:41:02+03:00"}).to_xml())
    document.find(f"{{{model.NAMESPACE}}}Weight").text = "11"
    answer = await client.post("/v1/events", content=etree.tostring(document), headers={**XML, **bearer(tokens.vendor)})
    assert answer.status_code == 400
    [error] = answer.json()["details"]["errors"]
    assert error["index"] == 0 and error["path"] == "/GradePosted/Weight"
    await assert_nothing_accepted(ingest_settings, db_pool)


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ejx_unknown", "Basic ZG5ldm5pazpwbHVz"])
async def test_no_or_unknown_token_is_401(client, header, ingest_settings, db_pool):
    headers = {"Authorization": header} if header else {}
    answer = await client.post("/v1/events", json=grade("g-1"), headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "SenderIsNotRegistered"
    await assert_nothing_accepted(ingest_settings, db_pool)


async def test_another_vendors_school_is_403_for_the_whole_request(client, tokens, ingest_settings, db_pool):
    events = [grade("g-1"), grade("g-2", school=OTHER_SCHOOL), grade("g-3", school="sch-unknown")]
    answer = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))
    assert answer.status_code == 403
    body = answer.json()
    assert body["code"] == "AccessDenied"
    assert [(e["index"], e["path"]) for e in body["details"]["errors"]] == [(1, "/school_id"), (2, "/school_id")]
    await assert_nothing_accepted(ingest_settings, db_pool)


async def test_a_vendor_cannot_send_as_another_source_system(client, tokens, ingest_settings, db_pool):
    answer = await client.post("/v1/events", json=grade("g-1", school=OTHER_SCHOOL, source_system="shkola-online"),
                               headers=bearer(tokens.vendor))
    assert answer.status_code == 403 and answer.json()["code"] == "AccessDenied"
    await assert_nothing_accepted(ingest_settings, db_pool)


async def test_oversized_bodies_are_413_whatever_the_header_says(ingest_settings, db_pool, tokens):
    limits = PayloadLimits(max_bytes=4096, max_events=5)
    async with ingest_service(ingest_settings, db_pool, limits=limits) as service, api(service, db_pool) as client:
        big = json.dumps([grade(f"g-{n}") for n in range(5)] * 2).encode()
        declared = await client.post("/v1/events", content=big, headers={**JSON, **bearer(tokens.vendor)})

        async def chunks():
            for start in range(0, len(big), 1000):
                yield big[start:start + 1000]
        streamed = await client.post("/v1/events", content=chunks(), headers={**JSON, **bearer(tokens.vendor)})
        many = await client.post("/v1/events", json=[grade(f"g-{n}") for n in range(6)],
                                 headers=bearer(tokens.vendor))
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    for answer in (declared, streamed):
        assert answer.status_code == 413 and answer.json()["code"] == "InvalidContent"
    assert many.status_code in (413,), many.text
    await assert_nothing_accepted(ingest_settings, db_pool)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/csv",
                                          "application/json; charset=windows-1251"])
async def test_other_content_types_are_415(client, tokens, content_type, ingest_settings, db_pool):
    answer = await client.post("/v1/events", content=json.dumps(grade("g-1")).encode(),
                               headers={"Content-Type": content_type, **bearer(tokens.vendor)})
    assert answer.status_code == 415 and answer.json()["code"] == "InvalidContent"
    await assert_nothing_accepted(ingest_settings, db_pool)


HOSTILE = [
    ("json", b"[" * 100_000 + b"]" * 100_000),
    ("json", b'{"type": "GradePosted", "version": ' + b"9" * 100_000 + b"}"),
    ("json", b'{"type": "GradePosted", "weight": 1e99999}'),
    ("json", b'[{"type": "GradePosted", "comment": "\xed\xa0\x80"}]'),
    ("json", b'{"type": "GradePosted", "comment": "\xff"}'),
    ("json", b'{"type": "GradePosted", "type": "GradeRetracted"}'),
    ("json", b"not json"),
    ("json", json.dumps(grade("X")).encode().replace(b'"X"', b'"\\ud800"')),  # a lone surrogate: no UTF-8 for it
    ("json", json.dumps({**grade("r-1"), "X": 1}).encode().replace(b'"X"', b'"\\udc80"')),
    ("xml", b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            b'<GradePosted xmlns="urn://ejx/events/1">&b;</GradePosted>'),
    ("xml", b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><GradePosted>&e;</GradePosted>'),
    ("xml", b'<GradePosted xmlns="urn://ejx/events/1">' + b"<a>" * 10_000 + b"</a>" * 10_000 + b"</GradePosted>"),
    ("xml", b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd"/>'),
    ("xml", b'<?xml version="1.0" encoding="UTF-16"?><GradePosted/>'),
    ("xml", b"<GradePosted><unclosed></GradePosted>"),
]


@pytest.mark.parametrize(("kind", "body"), HOSTILE, ids=[f"{k}-{n}" for n, (k, _) in enumerate(HOSTILE)])
async def test_hostile_bodies_are_400_invalid_content_and_nothing_is_produced(
        client, tokens, kind, body, ingest_settings, db_pool):
    headers = {**(JSON if kind == "json" else XML), **bearer(tokens.vendor)}
    answer = await client.post("/v1/events", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "InvalidContent"
    await assert_nothing_accepted(ingest_settings, db_pool)


async def test_an_unknown_xml_root_is_unknown_message_type(client, tokens):
    answer = await client.post("/v1/events", content=b'<Pizza xmlns="urn://ejx/events/1"/>',
                               headers={**XML, **bearer(tokens.vendor)})
    assert answer.status_code == 400
    assert answer.json()["details"]["errors"][0]["code"] == "UnknownMessageType"


async def test_kafka_unavailable_is_503_with_nothing_accepted_then_the_retry_succeeds_once(
        ingest_settings, db_pool, tokens):
    events = [grade("g-1"), grade("g-2")]
    down = ingest_settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:9"})  # nothing listens there
    async with ingest_service(down, db_pool) as service, api(service, db_pool) as client:
        answer = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))
    assert answer.status_code == 503
    assert answer.json()["code"] == "Failure" and answer.json()["retriable"] is True
    assert int(answer.headers["Retry-After"]) > 0
    await assert_nothing_accepted(ingest_settings, db_pool)

    async with ingest_service(ingest_settings, db_pool) as service, api(service, db_pool) as client:
        retry = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))
        again = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))
    assert retry.status_code == 202 and retry.json()["duplicates"] == 0
    assert again.json()["event_ids"] == retry.json()["event_ids"] and again.json()["duplicates"] == 2
    assert len(await read_topic(ingest_settings, ingest_settings.events_topic)) == 2


async def test_a_batch_kafka_fails_midway_is_aborted_invisible_and_retried_once(ingest_settings, db_pool, tokens):
    """Records reach the log, then the commit fails: read_committed consumers never see them."""
    class CommitFails:
        def __init__(self) -> None:
            self.failed = False

        def __call__(self, transactional_id):  # noqa: ANN001, ANN204
            producer = kafka.producer(ingest_settings, transactional_id=transactional_id)
            real_commit = producer.commit_transaction

            async def commit() -> None:
                if not self.failed:
                    self.failed = True
                    raise KafkaConnectionError("connection lost before EndTxn")
                await real_commit()
            producer.commit_transaction = commit
            return producer

    factory = CommitFails()
    events = [grade(f"g-{n}") for n in range(50)]
    async with ingest_service(ingest_settings, db_pool, producer_factory=factory) as service, \
            api(service, db_pool) as client:
        failed = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))
        assert failed.status_code == 503 and factory.failed
        await assert_nothing_accepted(ingest_settings, db_pool)
        retried = await client.post("/v1/events", json=events, headers=bearer(tokens.vendor))
    assert retried.status_code == 202 and retried.json()["duplicates"] == 0
    records = await read_topic(ingest_settings, ingest_settings.events_topic)
    assert sorted(r.headers["idempotency_key"] for r in records) == sorted(
        f"{VENDOR}/g-{n}/1" for n in range(50))


async def test_openapi_documents_both_endpoints_with_an_example_of_every_event_type(client):
    spec = (await client.get("/openapi.json")).json()
    post = spec["paths"]["/v1/events"]["post"]
    content = post["requestBody"]["content"]
    assert set(model.EVENT_TYPES) <= set(content["application/json"]["examples"])
    assert set(model.EVENT_TYPES) <= set(content["application/xml"]["examples"])
    assert {"202", "400", "401", "403", "413", "415", "503"} <= set(post["responses"])
    assert "/v1/oneroster/results" in spec["paths"]
    assert copy.deepcopy(spec["components"]["securitySchemes"]["HTTPBearer"])["scheme"] == "bearer"


async def test_a_database_that_cannot_answer_is_503_not_a_crash(ingest_settings, db_pool, tokens):
    pool = await create_pool(ingest_settings, max_size=2)
    async with ingest_service(ingest_settings, pool) as service, api(service, pool) as client:
        await pool.close()  # every query now fails the way a lost connection does
        answer = await client.post("/v1/events", json=grade("g-1"), headers=bearer(tokens.vendor))
    assert answer.status_code == 503 and answer.json()["code"] == "Failure"
    assert "Retry-After" in answer.headers
    await assert_nothing_accepted(ingest_settings, db_pool)


async def test_refused_events_are_counted_by_fault_code_once_per_event(client, tokens):
    def counted() -> dict[str, float]:
        return {code: metric("ejx_events_rejected_total", code=code)
                for code in ("InvalidContent", "UnknownMessageType", "AccessDenied")}
    before = counted()
    invalid = await client.post("/v1/events", headers=bearer(tokens.vendor), json=[
        grade("g-1"), grade("g-2", mark={"scale": "five-point", "value": "6"}), {"type": "GradeLost"}])
    denied = await client.post("/v1/events", headers=bearer(tokens.vendor), json=[
        grade("g-3", school=OTHER_SCHOOL), grade("g-4", school="sch-unknown")])
    assert (invalid.status_code, denied.status_code) == (400, 403)
    after = counted()
    assert {code: after[code] - before[code] for code in after} == {
        "InvalidContent": 1, "UnknownMessageType": 1, "AccessDenied": 2}
