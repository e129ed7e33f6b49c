"""Replay through the router: nothing new without --redeliver; one referencing envelope per event with it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from broker.app.cli import main
from broker.app.cli.moments import MOSCOW
from broker.delivery.destinations import PortalDestination
from broker.delivery.relay import Relay
from broker.devtools.receivers import ReceiverLog, portal_receiver_app
from broker.xml import hardened
from consumers.replay import ReplayRange, replay
from tests.delivery_support import event_xml, eventually, serving
from tests.integration.router_support import pair, pipeline, schemas  # noqa: F401  (fixtures)

EVENTS = 12


async def _route_and_deliver(pipeline, journal, url, router=None) -> int:
    if router is not None:
        stop = asyncio.Event()
        task = asyncio.create_task(router.run(stop))
        try:
            await eventually(lambda: _inbox(pipeline.pool, EVENTS), timeout=90)
        finally:
            stop.set()
            await task
    destination = PortalDestination(url)
    try:
        return await Relay(pipeline.pool, {"portal": destination}).drain()
    finally:
        await destination.close()


async def _inbox(pool, n):
    return await pool.fetchval("SELECT count(*) FROM inbox") == n


async def test_replay_delivers_nothing_twice_and_redeliver_references_the_originals(pipeline):
    started = datetime.now(UTC) - timedelta(minutes=1)
    for school in ("sch-1", "sch-2", "sch-3"):
        await pipeline.produce(*(event_xml(f"{school}-{i}", school=school) for i in range(EVENTS // 3)),
                               key=school.encode())
    journal = ReceiverLog(pipeline.pool, "portal")
    async with serving(portal_receiver_app(verifier=pipeline.verifier, receipts=journal)) as base:
        url = f"{base}/envelopes"
        assert await _route_and_deliver(pipeline, journal, url, pipeline.router()) == EVENTS
        originals = await journal.message_ids()

        everything = ReplayRange(topic=pipeline.settings.events_topic, from_offset=0)
        seen = []
        report = await replay(pipeline.settings, pipeline.router(), everything, on_start=seen.append)
        assert seen == [EVENTS] and report.records == EVENTS
        assert (report.total.skipped, report.total.messages) == (EVENTS, 0)
        assert await _route_and_deliver(pipeline, journal, url) == 0

        dry = await replay(pipeline.settings, pipeline.router(), everything, redeliver=True, dry_run=True)
        assert dry.total.redelivered == EVENTS
        assert await pipeline.pool.fetchval("SELECT count(*) FROM outbox") == EVENTS

        by_time = ReplayRange(topic=pipeline.settings.events_topic, from_time=started)
        report = await replay(pipeline.settings, pipeline.router(), by_time, redeliver=True)
        assert (report.total.redelivered, report.total.messages) == (EVENTS, EVENTS)
        assert await _route_and_deliver(pipeline, journal, url) == EVENTS

    rows = await pipeline.pool.fetch("SELECT message_id, reference_message_id FROM receiver_messages")
    references = [r["reference_message_id"] for r in rows if r["reference_message_id"] is not None]
    assert len(rows) == 2 * EVENTS
    assert sorted(references) == sorted(originals), "each redelivery references one original, once"
    assert set((await journal.message_ids()).values()) == {1}
    # The reference is inside the signed header, not only in our tables.
    payloads = await pipeline.pool.fetch("SELECT payload FROM outbox WHERE reference_message_id IS NOT NULL")
    assert {pipeline.verifier.verify(hardened.parse(p["payload"])).header.reference_message_id
            for p in payloads} == set(originals)


async def test_replay_of_one_partition_up_to_a_time_reads_only_that(pipeline):
    """Two records of partition 0 before the cut, one after it, and records of the other partitions on both
    sides: exactly the two are replayed."""
    topic = pipeline.settings.events_topic

    async def send(record: str, partition: int) -> int:
        sent = await pipeline.producer.send_and_wait(topic, event_xml(record, school="sch-1"), partition=partition)
        return sent.timestamp
    before = [await send(f"before-{i}", partition) for i, partition in enumerate((0, 1, 2, 0))]
    cut_ms = max(before) + 1
    while datetime.now(UTC).timestamp() * 1000 <= cut_ms:  # a millisecond or two: every later record is after it
        await asyncio.sleep(0.001)
    for partition in (0, 1, 2):
        await send(f"after-{partition}", partition)
    cut = datetime.fromtimestamp(cut_ms / 1000, UTC)

    report = await replay(pipeline.settings, pipeline.router(), ReplayRange(
        topic=topic, from_offset=0, partition=0, to_time=cut), dry_run=True)
    assert (report.records, report.partitions) == (2, {0: (0, 2)})
    assert report.total.routed == 2
    assert await pipeline.pool.fetchval("SELECT count(*) FROM outbox") == 0  # a dry run

    nothing_yet = await replay(pipeline.settings, pipeline.router(), ReplayRange(
        topic=topic, from_offset=0, partition=0, to_time=datetime.now(UTC) - timedelta(days=1)), dry_run=True)
    assert nothing_yet.records == 0 and list(nothing_yet.partitions) == [0]


async def test_replay_from_a_time_without_a_zone_reads_it_as_moscow_time(pipeline, monkeypatch):
    """`ejx replay --from-time` with the wall-clock time an operator reads in Moscow replays from then; read as
    UTC it would start three hours later and leave out what was just published."""
    await pipeline.produce(event_xml("moscow-1", school="sch-1"), key=b"sch-1")
    a_minute_ago = (datetime.now(MOSCOW) - timedelta(minutes=1)).replace(tzinfo=None).isoformat(timespec="seconds")
    monkeypatch.setenv("EJX_DATABASE_URL", pipeline.settings.database_dsn)
    result = await asyncio.to_thread(CliRunner().invoke, main, [
        "replay", "--topic", pipeline.settings.events_topic, "--from-time", a_minute_ago, "--dry-run"])
    assert result.exit_code == 0, result.output
    counts = next(line for line in result.output.splitlines() if line.startswith("│"))
    assert counts.split("│")[1].strip() == "1", result.output
