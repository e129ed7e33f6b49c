"""Stored envelopes are compressed with lz4, not pglz (migration 0012): a tenth of the CPU per row."""

from __future__ import annotations

import uuid
from pathlib import Path

from broker.audit import message_log
from broker.audit.chain import Direction, Entry, Kind
from broker.delivery import outbox
from broker.delivery.outbox import NewMessage

ENVELOPE = (Path(__file__).parents[2] / "schemas/examples/envelopes/broadcast-signed.xml").read_bytes()


async def test_envelopes_in_the_outbox_and_the_message_log_are_stored_lz4_compressed(db_pool):
    message_id = uuid.uuid1()
    payload = ENVELOPE + b"<!-- " + b"x" * 2000 + b" -->"  # past the 2 kB TOAST threshold, as envelopes are
    async with db_pool.acquire() as conn, conn.transaction():
        await outbox.enqueue(conn, [NewMessage(message_id=message_id, destination="portal", partition_key="k",
                                               payload=payload, recipient="EPGU", message_type="GradePosted")])
        await message_log.append(conn, [Entry(direction=Direction.OUT, participant="EPGU", message_id=message_id,
                                              kind=Kind.ENVELOPE, payload=payload)])
    stored = await db_pool.fetchrow(
        """SELECT pg_column_compression(o.payload) AS outbox, pg_column_compression(l.payload) AS log,
                  o.payload = l.payload AND o.payload = $2 AS intact
           FROM outbox o JOIN message_log l USING (message_id) WHERE o.message_id = $1""", message_id, payload)
    assert (stored["outbox"], stored["log"], stored["intact"]) == ("lz4", "lz4", True)
