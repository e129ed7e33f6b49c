"""Retention: each sweep deletes only what is past its retention; pending, dead, recent and first-version rows stay,
and a duplicate within the window is still caught."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import pytest

from adapters.ledger import IngestLedger, LedgerEntry
from broker.delivery import retention
from broker.delivery.relay import Relay, RelayOptions
from broker.delivery.retention import RetentionOptions
from broker.smev3.codec import Version
from broker.smev3.queue import QueuedRequest, SmevQueue
from consumers.loop import claim_inbox
from tests.delivery_support import eventually, metric

pytestmark = pytest.mark.postgres

OLD, RECENT = timedelta(days=30), timedelta(minutes=1)
WEEK = RetentionOptions(outbox=timedelta(days=7), inbox=timedelta(days=7), ingest_keys=timedelta(days=7),
                        ingest_records=timedelta(days=60), message_origin=timedelta(days=7), batch=1)
"""Batches of one row: every sweep has to loop over batches."""

OUTBOX = """INSERT INTO outbox (message_id, destination, partition_key, payload, status, delivered_at, created_at)
            VALUES ($1, 'portal', 'k', '\\x00', $2, now() - $3::interval, now() - $3::interval)"""


def entry(record: str, version: int) -> LedgerEntry:
    return LedgerEntry(idempotency_key=f"vendor-a:{record}:{version}", event_id=uuid.uuid4(), source_system="vendor-a",
                       source_record_id=record, version=version, event_type="GradePosted", school_id="sch-1")


async def age(pool: asyncpg.Pool, table: str, column: str, by: timedelta, where: str, *args: object) -> None:
    await pool.execute(f"UPDATE {table} SET {column} = now() - $1::interval WHERE {where}", by, *args)


async def test_outbox_sweep_deletes_only_old_delivered_rows_and_old_acknowledged_envelopes(
        db_pool: asyncpg.Pool) -> None:
    rows = {"old-delivered": ("delivered", OLD), "recent-delivered": ("delivered", RECENT),
            "old-pending": ("pending", OLD), "old-dead": ("dead", OLD)}
    ids = {name: uuid.uuid4() for name in rows}
    for name, (status, when) in rows.items():
        await db_pool.execute(OUTBOX, ids[name], status, when)
    queue = SmevQueue(db_pool)
    envelopes = {name: uuid.uuid4() for name in ("old-acked", "recent-acked", "old-unacked")}
    for message_id in envelopes.values():
        await queue.put([QueuedRequest(message_id=message_id, recipient="RSMEV", namespace_uri="urn://ejx/events/1",
                                       root_local_name="TermGradeFinalized",
                                       messages={v: b"<RequestMessage/>" for v in Version})])
    await queue.ack(recipient="RSMEV", message_id=envelopes["old-acked"], accepted=True, received=b"<Ack/>")
    await queue.ack(recipient="RSMEV", message_id=envelopes["recent-acked"], accepted=True, received=b"<Ack/>")
    await age(db_pool, "smev_queue", "acked_at", OLD, "message_id = $2", envelopes["old-acked"])
    await age(db_pool, "smev_queue", "enqueued_at", OLD, "message_id = $2", envelopes["old-unacked"])

    deleted = await retention.sweep(db_pool, WEEK)

    left = {row["message_id"] for row in await db_pool.fetch("SELECT message_id FROM outbox")}
    queued = {row["message_id"] for row in await db_pool.fetch("SELECT message_id FROM smev_queue")}
    assert (deleted["outbox"], deleted["smev_queue"]) == (1, 1)
    assert left == {ids["recent-delivered"], ids["old-pending"], ids["old-dead"]}
    assert queued == {envelopes["recent-acked"], envelopes["old-unacked"]}


async def test_inbox_and_origin_sweeps_forget_only_keys_past_their_retention(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        for consumer in ("router", "analytics"):
            await claim_inbox(conn, consumer, [("old", uuid.uuid4()), ("recent", uuid.uuid4())])
    await age(db_pool, "inbox", "processed_at", OLD, "idempotency_key = $2", "old")
    await db_pool.execute(
        """INSERT INTO message_origin (idempotency_key, destination, recipient, message_id, routed_at)
           VALUES ('old', 'portal', 'EPGU', $1, now() - interval '30 days'),
                  ('recent', 'portal', 'EPGU', $2, now())""", uuid.uuid4(), uuid.uuid4())
    swept_before = metric("ejx_retention_deleted_rows_total", table="inbox")

    deleted = await retention.sweep(db_pool, WEEK)

    inbox = {tuple(row) for row in await db_pool.fetch("SELECT consumer, idempotency_key FROM inbox")}
    origins = {row[0] for row in await db_pool.fetch("SELECT idempotency_key FROM message_origin")}
    assert (deleted["inbox"], deleted["message_origin"]) == (2, 1)
    assert inbox == {("router", "recent"), ("analytics", "recent")}
    assert origins == {"recent"}
    assert metric("ejx_retention_deleted_rows_total", table="inbox") == swept_before + 2
    async with db_pool.acquire() as conn:  # within the window a duplicate is still one; past it, the key is new
        assert await claim_inbox(conn, "router", [("recent", uuid.uuid4()), ("old", uuid.uuid4())]) == {"old"}


async def test_ingest_key_sweep_keeps_recent_keys_and_first_and_latest_versions_for_longer(
        db_pool: asyncpg.Pool) -> None:
    ledger = IngestLedger(db_pool)
    entries = [entry("a", 1), entry("a", 2), entry("a", 3), entry("b", 1), entry("c", 1), entry("d", 1), entry("d", 2)]
    async with ledger.claim(entries):
        pass
    await age(db_pool, "ingest_keys", "accepted_at", OLD, "NOT (source_record_id = 'a' AND version = 3)")
    await age(db_pool, "ingest_keys", "accepted_at", timedelta(days=90), "source_record_id = 'c'")

    deleted = await retention.sweep(db_pool, WEEK)

    kept = {(row[0], row[1]) for row in await db_pool.fetch("SELECT source_record_id, version FROM ingest_keys")}
    assert deleted["ingest_keys"] == 2
    assert kept == {("a", 1), ("a", 3), ("b", 1), ("d", 1), ("d", 2)}  # d2, the latest, is what a full sync resends
    assert await ledger.first_versions("vendor-a", ["a", "b"]) == {"a": (entries[0].event_id, 1),
                                                                    "b": (entries[3].event_id, 1)}
    async with ledger.claim([entry("a", 3), entry("a", 2)]) as again:  # the recent key is still a duplicate
        assert [e.idempotency_key for e in again.fresh] == ["vendor-a:a:2"]
        assert again.known == {"vendor-a:a:3": entries[2].event_id}
    async with ledger.claim([entry("d", 2)]) as resent:  # a month on, still a duplicate: nothing produced
        assert resent.fresh == [] and resent.known == {"vendor-a:d:2": entries[6].event_id}


async def test_the_relay_sweeps_beside_its_loop(db_pool: asyncpg.Pool) -> None:
    old, pending = uuid.uuid4(), uuid.uuid4()
    await db_pool.execute(OUTBOX, old, "delivered", OLD)
    await db_pool.execute(OUTBOX, pending, "pending", OLD)
    stop = asyncio.Event()
    relay = asyncio.create_task(Relay(db_pool, {}, options=RelayOptions(retention=WEEK)).run(stop))
    try:
        async def swept() -> bool:
            return await db_pool.fetchval("SELECT count(*) FROM outbox WHERE message_id = $1", old) == 0
        await eventually(swept, timeout=20)
    finally:
        stop.set()
        await relay
    assert await db_pool.fetchval("SELECT status FROM outbox WHERE message_id = $1", pending) == "pending"
