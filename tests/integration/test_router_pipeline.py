"""Router on real Kafka and PostgreSQL: crash between commits, DLQ, TestMessage, both receivers end to end."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from broker.access.participants import Participants
from broker.delivery.destinations import InteragencyDestination, PortalDestination
from broker.delivery.relay import Relay, RelayOptions
from broker.devtools.receivers import (
    InteragencyPullClient,
    PullClientOptions,
    ReceiverLog,
    portal_receiver_app,
)
from broker.infra import kafka
from broker.ops import metrics
from broker.smev3.client import Smev3Client
from broker.smev3.outgoing import RequestMessages
from broker.smev3.queue import SmevQueue
from broker.xml import hardened
from tests.delivery_support import (
    event_xml,
    eventually,
    metric,
    serving,
    term_grade_xml,
)
from tests.integration.router_support import (  # noqa: F401  (fixtures)
    pair,
    pipeline,
    read_all,
    run_until,
    schemas,
)
from tests.smev3_support import exchange_app, gost_pair


class Crash(BaseException):
    """Stands for the process dying: nothing below the hook gets to run."""


async def _count(pool, sql: str, *args) -> int:
    return await pool.fetchval(sql, *args)


async def test_crash_between_database_commit_and_offset_commit_delivers_nothing_twice(pipeline):
    events = 30
    for school in ("sch-1", "sch-2", "sch-3"):
        await pipeline.produce(*(event_xml(f"{school}-{i}", school=school) for i in range(events // 3)),
                               key=school.encode())

    async def crash(outcome):
        raise Crash()
    first = pipeline.router(after_commit=crash)
    with pytest.raises(Crash):
        await asyncio.wait_for(first.run(asyncio.Event()), timeout=120)
    routed_before_crash = await _count(pipeline.pool, "SELECT count(*) FROM outbox")
    assert routed_before_crash > 0

    group = first._options.group_id
    probe = kafka.consumer(pipeline.settings, group_id=group)
    async with kafka.running(probe):
        tps = [TopicPartition(pipeline.settings.events_topic, p) for p in range(3)]
        assert [await probe.committed(tp) for tp in tps] == [None, None, None], "offsets committed before crash"

    second = pipeline.router(options=first._options)
    await run_until(second, lambda: _inbox_full(pipeline.pool, events))
    assert await _count(pipeline.pool, "SELECT count(*) FROM outbox") == events
    assert await _count(pipeline.pool, "SELECT count(DISTINCT idempotency_key) FROM outbox") == events

    journal = ReceiverLog(pipeline.pool, "portal")
    async with serving(portal_receiver_app(verifier=pipeline.verifier, receipts=journal)) as base:
        portal = PortalDestination(f"{base}/envelopes")
        try:
            assert await Relay(pipeline.pool, {"portal": portal}).drain() == events
        finally:
            await portal.close()
    report = await journal.report()
    assert (report.received, report.duplicates, report.bad_signatures) == (events, 0, 0)


async def _inbox_full(pool, n):
    return await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'router'") == n


async def test_invalid_events_go_to_the_dlq_with_fault_headers_and_are_committed(pipeline):
    good = event_xml("ok-1")
    schema_invalid = event_xml("bad-1").replace(b"<Weight>2</Weight>", b"<Weight>heavy</Weight>")
    await pipeline.produce(b"<not-closed>", schema_invalid, good, b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")
    router = pipeline.router()
    await run_until(router, lambda: _inbox_full(pipeline.pool, 1))
    dead = await eventually(lambda: _dlq(pipeline, 3))
    assert sorted(dict(r.headers)["fault_code"] for r in dead) == [b"InvalidContent"] * 3
    assert all(dict(r.headers)["fault_description"] and dict(r.headers)["consumer"] == b"router" for r in dead)
    assert await _count(pipeline.pool, "SELECT count(*) FROM outbox") == 1

    probe = kafka.consumer(pipeline.settings, group_id=router._options.group_id)
    async with kafka.running(probe):
        tps = [TopicPartition(pipeline.settings.events_topic, p) for p in range(3)]
        ends = await probe.end_offsets(tps)
        assert {tp: (await probe.committed(tp)) or 0 for tp in tps} == ends


async def _dlq(pipeline, n):
    records = await read_all(pipeline.settings, pipeline.settings.dlq_topic)
    return records if len(records) >= n else None


async def test_the_router_reports_its_lag(pipeline):
    """ejx_consumer_lag{consumer="router"} (which /v1/monitoring/pipeline shows): behind while the backlog is
    worked off, 0 once it is routed."""
    await pipeline.produce(*(event_xml(f"lag-{i}") for i in range(25)))
    topic = pipeline.settings.events_topic
    seen: list[int | None] = []

    async def after_commit(outcome):
        seen.append(metrics.consumer_lag("router").get(topic))
    router = pipeline.router(after_commit=after_commit)
    await run_until(router, lambda: _inbox_full(pipeline.pool, 25))
    assert seen[0] is not None and seen[0] > 0  # 10 records a batch: the first commit leaves some behind
    assert metrics.consumer_lag("router")[topic] == 0


BAD_ENVELOPE_CONTENT = {
    "relative namespace": lambda xml: xml.replace(b'xmlns="urn://ejx/events/1"',
                                                  b'xmlns="urn://ejx/events/1" xmlns:r="relative"', 1),
    "xsi:type": lambda xml: xml.replace(b'xmlns="urn://ejx/events/1"', b'xmlns="urn://ejx/events/1" '
                                        b'xmlns:ev="urn://ejx/events/1" xmlns:xsi="http://www.w3.org/2001/'
                                        b'XMLSchema-instance" xsi:type="ev:GradePostedType"', 1),
    "batch of one": lambda xml: b'<EventBatch xmlns="urn://ejx/events/1">' + xml + b"</EventBatch>",
}
"""Events valid against their schema that no valid envelope can carry."""


@pytest.mark.parametrize("spoil", BAD_ENVELOPE_CONTENT.values(), ids=list(BAD_ENVELOPE_CONTENT))
async def test_an_event_no_valid_envelope_can_carry_goes_to_the_dlq_and_the_rest_is_routed(pipeline, spoil):
    await pipeline.produce(spoil(event_xml("bad-1")), event_xml("ok-1"))
    outcome = await pipeline.router().process(await read_all(pipeline.settings, pipeline.settings.events_topic))
    assert (outcome.routed, outcome.rejected) == (1, 1)
    (dead,) = await eventually(lambda: _dlq(pipeline, 1))
    assert dict(dead.headers)["fault_code"] == b"InvalidContent"
    for row in await pipeline.pool.fetch("SELECT payload FROM outbox"):
        pipeline.schemas.validate_envelope(hardened.parse(row["payload"]))


async def test_a_header_that_is_not_utf8_does_not_stop_the_router(pipeline):
    await pipeline.produce(event_xml("h-1"), headers=[("traceparent", b"\xff\xfe")])
    outcome = await pipeline.router().process(await read_all(pipeline.settings, pipeline.settings.events_topic))
    assert (outcome.routed, outcome.rejected) == (1, 0)


async def test_test_message_flag_reaches_the_envelope_and_keeps_its_own_inbox_key(pipeline):
    await pipeline.produce(event_xml("t-1"), headers=[("test_message", b"true")])
    await pipeline.produce(event_xml("t-1"))
    await run_until(pipeline.router(), lambda: _inbox_full(pipeline.pool, 2))
    rows = await pipeline.pool.fetch("SELECT idempotency_key, payload FROM outbox ORDER BY id")
    assert [r["idempotency_key"] for r in rows] == ["test:dnevnik-plus/t-1/1", "dnevnik-plus/t-1/1"]
    flags = [pipeline.verifier.verify(hardened.parse(r["payload"])).header.test for r in rows]
    assert flags == [True, False]


async def test_term_grade_reaches_portal_and_interagency_once_each_with_verified_signatures(pipeline):
    signed_before = metric("ejx_envelopes_signed_total", algorithm=pipeline.signer.method)
    delivered_before = {d: metric("ejx_deliveries_total", destination=d, outcome="delivered")
                        for d in ("portal", "interagency")}
    latencies_before = metric("ejx_relay_delivery_latency_seconds_count", destination="portal")
    await pipeline.produce(term_grade_xml("term-1"), event_xml("grade-1"))
    await run_until(pipeline.router(), lambda: _inbox_full(pipeline.pool, 2))
    assert metric("ejx_envelopes_signed_total", algorithm=pipeline.signer.method) - signed_before == 3

    portal_log = ReceiverLog(pipeline.pool, "portal")
    interagency_log = ReceiverLog(pipeline.pool, "interagency")
    ejx_smev, agency = gost_pair("ejx SMEV"), gost_pair("RSMEV")
    await Participants(pipeline.pool).add("RSMEV", agency.facts)
    async with (serving(portal_receiver_app(verifier=pipeline.verifier, receipts=portal_log)) as portal_url,
                exchange_app(pipeline.pool) as exchange_url):
        portal = PortalDestination(f"{portal_url}/envelopes")
        interagency = InteragencyDestination(producer=pipeline.producer, topic=pipeline.settings.interagency_topic,
                                             queue=SmevQueue(pipeline.pool), messages=RequestMessages(ejx_smev.key))
        try:
            assert await Relay(pipeline.pool, {"portal": portal, "interagency": interagency},
                               options=RelayOptions()).drain() == 3
        finally:
            await portal.close()
        smev = Smev3Client(f"{exchange_url}/smev3/1.2", agency.key,
                           trusted=frozenset({ejx_smev.key.certificate_der}))
        client = InteragencyPullClient(smev, receipts=interagency_log, options=PullClientOptions(recipient="RSMEV"))
        try:
            assert await client.pull_once() is True
            assert await client.pull_once() is False
        finally:
            await smev.aclose()

    portal_report, interagency_report = await portal_log.report(), await interagency_log.report()
    assert (portal_report.received, portal_report.duplicates, portal_report.bad_signatures) == (2, 0, 0)
    assert (interagency_report.received, interagency_report.duplicates,
            interagency_report.bad_signatures) == (1, 0, 0)
    on_topic = await read_all(pipeline.settings, pipeline.settings.interagency_topic)
    assert [(r.key, dict(r.headers)["message_type"]) for r in on_topic] == [(b"RSMEV", b"TermGradeFinalized")]
    assert {d: metric("ejx_deliveries_total", destination=d, outcome="delivered") - delivered_before[d]
            for d in delivered_before} == {"portal": 2, "interagency": 1}
    assert metric("ejx_relay_delivery_latency_seconds_count", destination="portal") - latencies_before == 2
    # What ejx signed for the agency (one RequestMessage per protocol version), the agency's GetRequest that
    # took it and its Ack are logged.
    logged = await pipeline.pool.fetch(
        "SELECT direction, participant, kind, count(*) AS n FROM message_log WHERE kind <> 'envelope' "
        "GROUP BY 1, 2, 3 ORDER BY 3")
    assert [(r["direction"], r["participant"], r["kind"], r["n"]) for r in logged] == [
        ("in", "RSMEV", "ack", 1), ("out", "RSMEV", "smev3-request", 2), ("in", "RSMEV", "smev3-take", 1)]
