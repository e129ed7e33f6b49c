"""The SMEV 3 queues in PostgreSQL: per participant, of RequestMessages (GetRequest) and ResponseMessages
(GetResponse), each signed at enqueue.

A message is handed out oldest first and hidden for a visibility timeout; one not
acknowledged by then is handed out again — the same stored bytes, so the same
MessageID and the same signatures (the reader crashed, or its Ack was lost). An
acknowledged message is never handed out again, whether accepted or refused. Every
statement names the participant, so no caller can see or acknowledge another's messages.
Every Ack is appended to the message log in the transaction that records it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import asyncpg
import structlog

from broker.audit import message_log
from broker.audit.chain import Direction, Entry, Kind
from broker.domain.faults import TargetMessageIsNotFound
from broker.infra.postgres import outage_as_failure, rows_affected
from broker.smev3.wire import Version

log = structlog.get_logger(__name__)

_COLUMN = {Version.V1_2: "message_1_2", Version.V1_3: "message_1_3"}


class Queued(StrEnum):
    """What a queue row holds: what GetRequest takes, or what GetResponse takes."""

    REQUEST = "request"
    RESPONSE = "response"


@dataclass(frozen=True)
class QueueOptions:
    """How the queue hands messages out."""

    visibility_timeout_s: float = 60.0
    """A message handed out and not acknowledged within this is handed out again."""


@dataclass(frozen=True)
class QueuedRequest:
    """One message for one participant, in every version ejx serves (RequestMessage, signed)."""

    message_id: uuid.UUID
    recipient: str
    namespace_uri: str
    root_local_name: str
    messages: dict[Version, bytes]
    ordering_key: str | None = None
    """The outbox row's partition key: the queue hands a key's messages out one at a time, in order."""


@dataclass(frozen=True)
class QueuedResponse:
    """A signed ResponseMessage for the requester, in the one version its request came in."""

    message_id: uuid.UUID
    """SenderProvidedResponseData/MessageID: what the requester acknowledges."""
    recipient: str
    version: Version
    namespace_uri: str
    root_local_name: str
    message: bytes


async def put_response(conn: asyncpg.Connection, response: QueuedResponse) -> None:
    """Enqueue a response on the producer's own transaction (it commits with the request's record)."""
    await conn.execute(
        f"""INSERT INTO smev_queue (message_id, recipient, namespace_uri, root_local_name, kind,
                                    {_COLUMN[response.version]})
            VALUES ($1, $2, $3, $4, 'response', $5)""",
        response.message_id, response.recipient, response.namespace_uri, response.root_local_name, response.message)


@dataclass(frozen=True)
class HandedOut:
    message_id: uuid.UUID
    request_message: bytes
    deliveries: int
    """How many times it was handed out, this time included."""


class SmevQueue:
    """Any number of ejx processes may share it (``FOR UPDATE SKIP LOCKED``)."""

    def __init__(self, pool: asyncpg.Pool, *, options: QueueOptions = QueueOptions()) -> None:
        self._pool = pool
        self._visibility = timedelta(seconds=options.visibility_timeout_s)

    async def held(self, message_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Those of ``message_ids`` enqueued already (so a retried delivery need not sign them again)."""
        with outage_as_failure("the SMEV queue"):
            return {row["message_id"] for row in await self._pool.fetch(
                "SELECT message_id FROM smev_queue WHERE message_id = ANY($1::uuid[])", list(message_ids))}

    async def put(self, requests: Sequence[QueuedRequest]) -> set[uuid.UUID]:
        """Enqueue each MessageID once (the first copy's signatures stay), in one transaction, in order;
        returns the MessageIDs that were new.

        The new ones' signed RequestMessages enter the message log in the same transaction, once:
        one append for the whole batch, so the log's head is taken once, not once per message.
        """
        if not requests:
            return set()
        with outage_as_failure("the SMEV queue"):
            async with self._pool.acquire() as conn, conn.transaction():
                fresh = {row["message_id"] for row in await conn.fetch(
                    """INSERT INTO smev_queue (message_id, recipient, namespace_uri, root_local_name, message_1_2,
                                               message_1_3, ordering_key)
                       SELECT m, r, n, l, a, b, k FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                                                              $5::bytea[], $6::bytea[], $7::text[])
                                                       WITH ORDINALITY AS t(m, r, n, l, a, b, k, position)
                       ORDER BY position
                       ON CONFLICT (message_id) DO NOTHING RETURNING message_id""",
                    *map(list, zip(*((r.message_id, r.recipient, r.namespace_uri, r.root_local_name,
                                      r.messages[Version.V1_2], r.messages[Version.V1_3], r.ordering_key)
                                     for r in requests))))}
                # Last before the commit: the append holds the log's head until then.
                await message_log.append(conn, [
                    Entry(Direction.OUT, request.recipient, request.message_id, Kind.SMEV3_REQUEST, message)
                    for request in requests if request.message_id in fresh for message in request.messages.values()])
        return fresh

    async def take(self, *, recipient: str, version: Version, namespace_uri: str | None = None,
                   root_local_name: str | None = None, kind: Queued = Queued.REQUEST, received: bytes
                   ) -> HandedOut | None:
        """The oldest visible unacknowledged message of ``recipient`` of that kind (and business root, if
        given) in ``version``, now hidden for the visibility timeout; None when there is none.

        Never one with an earlier unacknowledged message of its key (handed out or not, of any business
        root): that one is acknowledged first, or handed out again once its visibility timeout passes.
        ``received`` (the signed GetRequest / GetResponse as it came) goes to the message log when it takes
        a message for the first time, in the same transaction: who took it, and when. A message handed out
        again (its Ack not come) is not logged again, so one a reader keeps refusing to acknowledge cannot
        grow the log by a request per visibility timeout."""
        column = _COLUMN[version]
        with outage_as_failure("the SMEV queue"):
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"""UPDATE smev_queue SET visible_at = now() + $4::interval, deliveries = deliveries + 1
                        WHERE message_id = (
                            SELECT q.message_id FROM smev_queue q
                            WHERE q.recipient = $1 AND q.kind = $5 AND q.acked_at IS NULL AND q.visible_at <= now()
                              AND q.{column} IS NOT NULL
                              AND ($2::text IS NULL OR (q.namespace_uri = $2 AND q.root_local_name = $3))
                              AND q.seq <= coalesce((
                                  SELECT p.seq FROM smev_queue p
                                  WHERE p.recipient = q.recipient AND p.kind = q.kind
                                    AND p.ordering_key = q.ordering_key AND p.acked_at IS NULL
                                  ORDER BY p.recipient, p.kind, p.ordering_key, p.seq LIMIT 1), q.seq)
                            ORDER BY q.seq LIMIT 1 FOR UPDATE OF q SKIP LOCKED)
                        RETURNING message_id, {column} AS request_message, deliveries""",
                    recipient, namespace_uri, root_local_name, self._visibility, kind.value)
                if row is not None and row["deliveries"] == 1:  # last before the commit: it holds the log's head
                    await message_log.append(conn, [
                        Entry(Direction.IN, recipient, row["message_id"], Kind.SMEV3_TAKE, received)])
        return HandedOut(**dict(row)) if row else None

    async def ack(self, *, recipient: str, message_id: uuid.UUID, accepted: bool, received: bytes) -> None:
        """Acknowledge for good (a request or a response); repeating an Ack is harmless. A MessageID not in
        ``recipient``'s queue — unknown, or another participant's — is TargetMessageIsNotFound: the two are
        indistinguishable. ``received`` (the signed Ack as it came) goes to the message log with the record."""
        with outage_as_failure("the SMEV queue"):
            async with self._pool.acquire() as conn, conn.transaction():
                status = await conn.execute(
                    """UPDATE smev_queue SET acked_at = coalesce(acked_at, now()), accepted = coalesce(accepted, $3)
                       WHERE message_id = $1 AND recipient = $2""", message_id, recipient, accepted)
                if rows_affected(status) == 0:
                    raise TargetMessageIsNotFound(f"no message {message_id} in the queue of {recipient}")
                # Last before the commit: the append holds the log's head until then.
                await message_log.append(conn, [Entry(Direction.IN, recipient, message_id, Kind.ACK, received)])

    async def pending(self, *, recipient: str) -> dict[str, int]:
        """Unacknowledged messages of ``recipient`` per business root, named ``{namespace}local-name``."""
        with outage_as_failure("the SMEV queue"):
            rows = await self._pool.fetch(
                """SELECT namespace_uri, root_local_name, count(*) AS n FROM smev_queue
                   WHERE recipient = $1 AND kind = 'request' AND acked_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2""",
                recipient)
        return {f"{{{row['namespace_uri']}}}{row['root_local_name']}": row["n"] for row in rows}
