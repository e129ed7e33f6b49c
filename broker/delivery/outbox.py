"""The transactional outbox: envelopes waiting for delivery, written with the business rows.

Writers enqueue on the connection of their own unit of work, so a message exists
exactly when the transaction that produced it committed. The relay claims rows
with a short lease (``FOR UPDATE SKIP LOCKED`` in a transaction of its own) and
delivers outside any transaction: a delivery never holds locks or the xmin
horizon back while it waits on a receiver.

Order per ``(destination, partition_key)``: ids come from a sequence at insert
time, so in general a smaller id can commit after a larger one. Writers take a
transaction-scoped advisory lock on the key's bucket before inserting, so two
transactions writing the same key serialise and, within a key, id order is
commit order: the relay claims a key's rows by id alone, as soon as they are
committed — a long transaction elsewhere in the database delays nothing.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog

from broker.infra.postgres import rows_affected

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class NewMessage:
    """One envelope to enqueue for one destination."""

    message_id: uuid.UUID
    destination: str
    """Delivery channel: "portal", "interagency"."""
    partition_key: str
    """Order is kept among messages with the same destination and key (a journal record: a grade, its
    corrections and its retraction share one, ``consumers.router.ordering_key``)."""
    payload: bytes
    """The signed envelope, exactly as it goes on the wire."""
    recipient: str
    message_type: str
    idempotency_key: str | None = None
    reference_message_id: uuid.UUID | None = None


@dataclass(frozen=True)
class OutboxMessage:
    """A claimed row: what a destination needs to deliver it."""

    id: int
    message_id: uuid.UUID
    destination: str
    partition_key: str
    payload: bytes
    recipient: str
    message_type: str
    attempts: int
    """Including the attempt this claim is for."""
    lease_id: uuid.UUID
    reference_message_id: uuid.UUID | None = None
    created_at: datetime | None = None
    """When the row was written (the relay's delivery latency is measured from here)."""


@dataclass(frozen=True)
class DestinationSummary:
    """Counts for one destination, as ``ejx outbox status`` shows them."""

    destination: str
    pending: int
    delivered: int
    dead: int
    oldest_pending: datetime | None


@dataclass(frozen=True)
class DeadMessage:
    destination: str
    message_id: uuid.UUID
    attempts: int
    last_error: str | None
    created_at: datetime


CHANNEL = "ejx_outbox"
"""Notified (migration 0010) whenever a statement inserted outbox rows; delivered at commit."""


KEY_LOCKS = 0x6F7574  # "out": the advisory-lock class of outbox key buckets
KEY_BUCKETS = 64
"""Keys hash into this many buckets: few enough that a batch of any size takes a bounded number of
locks (the lock table is small), many enough that unrelated writers rarely wait on each other."""


def key_bucket(destination: str, partition_key: str) -> int:
    """The advisory-lock bucket of one ordering key; stable across processes (not Python's hash())."""
    return zlib.crc32(f"{destination}\x1f{partition_key}".encode()) % KEY_BUCKETS


_COLUMNS = ("message_id", "destination", "partition_key", "payload", "recipient", "message_type",
            "idempotency_key", "reference_message_id")


async def enqueue(conn: asyncpg.Connection, messages: Sequence[NewMessage]) -> int:
    """Insert ``messages`` on the caller's transaction; an existing (message_id, destination) is kept.

    Returns how many rows were new.
    """
    if not messages:
        return 0
    buckets = sorted({key_bucket(m.destination, m.partition_key) for m in messages})
    # One order for every writer (array order is lock order), so two writers never deadlock here.
    await conn.execute("SELECT pg_advisory_xact_lock($1, b) FROM unnest($2::int[]) AS b", KEY_LOCKS, buckets)
    columns = list(zip(*((m.message_id, m.destination, m.partition_key, m.payload, m.recipient,
                          m.message_type, m.idempotency_key, m.reference_message_id) for m in messages)))
    rows = await conn.fetch(
        f"""INSERT INTO outbox ({", ".join(_COLUMNS)})
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[],
                                 $7::text[], $8::uuid[])
            ON CONFLICT (message_id, destination) DO NOTHING
            RETURNING id""", *columns)
    return len(rows)


CLAIM = """
    WITH heads AS MATERIALIZED (
        SELECT o.id, o.destination, o.partition_key FROM outbox o
        WHERE o.status = 'pending' AND o.destination = $5 AND o.next_attempt_at <= now()
          AND o.id <= coalesce(
              (SELECT 0 FROM outbox d
               WHERE d.status = 'dead' AND d.destination = o.destination AND d.partition_key = o.partition_key
                 AND d.id < o.id
               ORDER BY d.destination, d.partition_key, d.id LIMIT 1),
              (SELECT e.id FROM outbox e
               WHERE e.status = 'pending' AND e.destination = o.destination
                 AND e.partition_key = o.partition_key
               ORDER BY e.destination, e.partition_key, e.id LIMIT 1))
        ORDER BY o.next_attempt_at, o.id
        LIMIT $1
        FOR UPDATE OF o SKIP LOCKED),
    window_rows AS (
        SELECT w.id FROM heads k, LATERAL (
            SELECT r.id FROM outbox r
            WHERE r.status = 'pending' AND r.destination = k.destination
              AND r.partition_key = k.partition_key
            ORDER BY r.id LIMIT $2) w)
    UPDATE outbox SET attempts = outbox.attempts + 1, next_attempt_at = now() + $3::interval,
                      lease_id = $4
    WHERE outbox.id = ANY (ARRAY(SELECT id FROM window_rows)) AND outbox.status = 'pending'
    RETURNING outbox.id, outbox.message_id, outbox.destination, outbox.partition_key, outbox.payload,
              outbox.recipient, outbox.message_type, outbox.attempts, outbox.reference_message_id,
              outbox.created_at"""
"""The claim ($1 keys, $2 rows per key, $3 lease, $4 lease id, $5 destination). Every lookup is written so
that no plan, whatever the statistics say, turns it into a scan of the backlog:

- Each lookup can use one partial index only (migration 0015): the walk in due order the due index, the
  per-key probes the key-order index, the update by id the primary key. Statistics taken while nothing was
  pending call both partial indexes empty; PostgreSQL then took either for anything, and the probes walked
  the destination's whole due range: 17-22 s per claim over 10,000 pending rows.
- "Is this row its key's head" is one probe of the key-order index: the subquery orders by exactly that
  index's columns. As ``min(e.id)``, a table never analysed (a fresh deployment's first minute, every bench)
  walked the destination's due range per head: 335 ms per claim of 200 over 10,000 rows.
- The test is ``o.id <=`` the head, which for a pending row of the key is the same as ``=``: the planner
  reads ``=`` as selecting one row in 200, so with statistics of the backlog it read every due row, sorted
  them and kept the first ``$1`` (28 ms over 7,000 due rows); ``<=`` lets it walk the due index in order
  and stop at the limit.
- As a NOT EXISTS anti-join or an IN join, statistics that call pending rows rare had PostgreSQL compare
  every due row with every other: 19-30 s per claim over 10,000 rows.
- A key with an earlier dead row is held back (migration 0016): inside the same comparison, the dead
  rows' own partial index is probed first and answers 0 (no id is that small) when one exists. As a
  filter of its own (``(…) IS NULL``) it made PostgreSQL expect 17 heads where 200 were asked for, and
  it read and sorted every due row instead (57,000 buffers per claim over 10,000 rows)."""


async def claim(pool: asyncpg.Pool, destination: str, *, keys: int, per_key: int = 1,
                lease: timedelta) -> list[OutboxMessage]:
    """Lease the next rows of up to ``keys`` of ``destination``'s partition keys whose earliest row is due
    (and not behind a dead row of the key).

    Per key, the earliest pending row (the head) is locked first and only then up
    to ``per_key`` rows from it in order, so two relays never split one key's rows.
    The lease pushes ``next_attempt_at`` forward and counts the attempt: a relay
    that dies mid-delivery leaves the rows to be claimed again once the lease ends.
    Returned in delivery order: by key, then id.
    """
    lease_id = uuid.uuid4()
    rows = await pool.fetch(CLAIM, keys, per_key, lease, lease_id, destination)
    ordered = sorted(rows, key=lambda r: (r["destination"], r["partition_key"], r["id"]))
    return [OutboxMessage(lease_id=lease_id, **dict(row)) for row in ordered]


async def renew(pool: asyncpg.Pool, messages: Sequence[OutboxMessage], *, lease: timedelta) -> set[int]:
    """Extend the lease of claimed rows still being delivered; the ids this lease still holds."""
    held: set[int] = set()
    for lease_id in {m.lease_id for m in messages}:
        rows = await pool.fetch(
            """UPDATE outbox SET next_attempt_at = now() + $3::interval
               WHERE id = ANY($1::bigint[]) AND status = 'pending' AND lease_id = $2 RETURNING id""",
            [m.id for m in messages if m.lease_id == lease_id], lease_id, lease)
        held.update(row["id"] for row in rows)
    return held


async def release(pool: asyncpg.Pool, messages: Sequence[OutboxMessage]) -> None:
    """Give back claimed rows that were not attempted (an earlier row of their key failed)."""
    for lease_id in {m.lease_id for m in messages}:
        await pool.execute(
            """UPDATE outbox SET attempts = attempts - 1, next_attempt_at = now(), lease_id = NULL
               WHERE id = ANY($1::bigint[]) AND status = 'pending' AND lease_id = $2""",
            [m.id for m in messages if m.lease_id == lease_id], lease_id)


MARK_DELIVERED = """UPDATE outbox SET status = 'delivered', delivered_at = now(), last_error = NULL, lease_id = NULL
                     WHERE id = ANY($1::bigint[]) AND status = 'pending'"""
"""Rows found by id, through the primary key: no partial index of pending rows applies (migration 0015)."""


async def mark_delivered(pool: asyncpg.Pool, ids: Iterable[int]) -> None:
    """Delivered is final, whichever lease got there first."""
    await pool.execute(MARK_DELIVERED, list(ids))


async def mark_retry(pool: asyncpg.Pool, message: OutboxMessage, *, delay: timedelta, error: str) -> bool:
    """Schedule the next attempt, unless another lease has taken the row since (then False)."""
    return rows_affected(await pool.execute(
        """UPDATE outbox SET next_attempt_at = now() + $2::interval, last_error = $3, lease_id = NULL
           WHERE id = $1 AND status = 'pending' AND lease_id = $4""",
        message.id, delay, error[:2000], message.lease_id)) > 0


async def mark_dead(pool: asyncpg.Pool, message: OutboxMessage, *, error: str) -> bool:
    """Park the row for an operator; it holds back the later rows of its key until it is redriven (order
    per journal record: no correction overtakes the grade it corrects). False if another lease has taken
    the row since."""
    return rows_affected(await pool.execute(
        """UPDATE outbox SET status = 'dead', last_error = $2, lease_id = NULL
           WHERE id = $1 AND status = 'pending' AND lease_id = $3""",
        message.id, error[:2000], message.lease_id)) > 0


async def redrive(pool: asyncpg.Pool, *, destination: str | None = None, since: datetime | None = None) -> int:
    """Return dead rows to pending with a fresh attempt budget; their MessageIDs stay the same."""
    status = await pool.execute(
        """UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_id = NULL
           WHERE status = 'dead' AND ($1::text IS NULL OR destination = $1)
             AND ($2::timestamptz IS NULL OR created_at >= $2)""",
        destination, since)
    count = rows_affected(status)
    log.info("outbox.redriven", rows=count, destination=destination, since=since)
    return count


@dataclass(frozen=True)
class Discarded:
    """What ``discard`` did: rows discarded, and each MessageID asked for whose rows it left as they were."""

    rows: int
    kept: dict[uuid.UUID, str | None]
    """MessageID → the statuses of its rows (none dead), or None if the outbox has no row of it."""


async def discard(pool: asyncpg.Pool, message_ids: Sequence[uuid.UUID], *, destination: str | None = None
                  ) -> Discarded:
    """Give up on dead rows for good: never delivered, and no longer holding back their keys. Only dead
    rows: a pending one may be in flight, and a delivered one has arrived."""
    async with pool.acquire() as conn, conn.transaction():
        discarded = await conn.fetch(
            """UPDATE outbox SET status = 'discarded', lease_id = NULL
               WHERE status = 'dead' AND message_id = ANY($1::uuid[]) AND ($2::text IS NULL OR destination = $2)
               RETURNING message_id""", list(message_ids), destination)
        done = {row["message_id"] for row in discarded}
        left = [m for m in dict.fromkeys(message_ids) if m not in done]
        found = {row["message_id"]: row["statuses"] for row in await conn.fetch(
            """SELECT message_id, string_agg(DISTINCT status, ', ' ORDER BY status) AS statuses FROM outbox
               WHERE message_id = ANY($1::uuid[]) AND ($2::text IS NULL OR destination = $2) GROUP BY 1""",
            left, destination)} if left else {}
    count = len(discarded)
    log.warning("outbox.discarded", rows=count, message_ids=[str(m) for m in message_ids], destination=destination)
    return Discarded(rows=count, kept={m: found.get(m) for m in left})


async def summary(pool: asyncpg.Pool) -> list[DestinationSummary]:
    rows = await pool.fetch(
        """SELECT destination,
                  count(*) FILTER (WHERE status = 'pending') AS pending,
                  count(*) FILTER (WHERE status = 'delivered') AS delivered,
                  count(*) FILTER (WHERE status = 'dead') AS dead,
                  min(created_at) FILTER (WHERE status = 'pending') AS oldest_pending
           FROM outbox GROUP BY destination ORDER BY destination""")
    return [DestinationSummary(**dict(row)) for row in rows]


async def dead_messages(pool: asyncpg.Pool, *, limit: int = 20) -> list[DeadMessage]:
    rows = await pool.fetch(
        """SELECT destination, message_id, attempts, last_error, created_at FROM outbox
           WHERE status = 'dead' ORDER BY id DESC LIMIT $1""", limit)
    return [DeadMessage(**dict(row)) for row in rows]
