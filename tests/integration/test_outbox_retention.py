"""Retention: what was delivered long enough ago is deleted; nothing undelivered ever is."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest

from broker.delivery import outbox
from broker.smev3.codec import Version
from broker.smev3.queue import QueuedRequest, SmevQueue

pytestmark = pytest.mark.postgres

INSERT = """INSERT INTO outbox (message_id, destination, partition_key, payload, status, delivered_at)
            VALUES ($1, 'portal', 'k', '\\x00', $2, now() - $3::interval)"""


async def test_sweep_deletes_only_old_delivered_rows_and_old_acknowledged_envelopes(db_pool: asyncpg.Pool) -> None:
    old, recent = timedelta(days=30), timedelta(minutes=1)
    rows = {"old-delivered": ("delivered", old), "recent-delivered": ("delivered", recent),
            "old-pending": ("pending", old), "old-dead": ("dead", old)}
    ids = {name: uuid.uuid4() for name in rows}
    for name, (status, age) in rows.items():
        await db_pool.execute(INSERT, ids[name], status, age)
    queue = SmevQueue(db_pool)
    envelopes = {name: uuid.uuid4() for name in ("old-acked", "recent-acked", "old-unacked")}
    for message_id in envelopes.values():
        await queue.put(QueuedRequest(message_id=message_id, recipient="RSMEV", namespace_uri="urn://ejx/events/1",
                                      root_local_name="TermGradeFinalized",
                                      messages={v: b"<RequestMessage/>" for v in Version}))
    await queue.ack(recipient="RSMEV", message_id=envelopes["old-acked"], accepted=True, received=b"<Ack/>")
    await queue.ack(recipient="RSMEV", message_id=envelopes["recent-acked"], accepted=True, received=b"<Ack/>")
    await db_pool.execute("UPDATE smev_queue SET acked_at = now() - interval '30 days' WHERE message_id = $1",
                          envelopes["old-acked"])
    await db_pool.execute("UPDATE smev_queue SET enqueued_at = now() - interval '30 days' WHERE message_id = $1",
                          envelopes["old-unacked"])

    deleted = await outbox.sweep(db_pool, older_than=timedelta(days=7), chunk=1)

    left = {row["message_id"] for row in await db_pool.fetch("SELECT message_id FROM outbox")}
    queued = {row["message_id"] for row in await db_pool.fetch("SELECT message_id FROM smev_queue")}
    assert deleted == 2
    assert left == {ids["recent-delivered"], ids["old-pending"], ids["old-dead"]}
    assert queued == {envelopes["recent-acked"], envelopes["old-unacked"]}
