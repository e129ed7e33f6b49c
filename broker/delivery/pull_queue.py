"""The SMEV-style pull queue: the interagency system asks for its next envelope and acknowledges it.

``get-message`` hands out the oldest unacknowledged envelope for a recipient and
hides it for a visibility timeout; an envelope not acknowledged by then is handed
out again (the reader crashed, or its Ack was lost). An acknowledged envelope is
never handed out again, whether it was accepted or refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from broker.domain.faults import TargetMessageIsNotFound
from broker.infra.http_server import fault_router
from broker.infra.postgres import outage_as_failure

log = structlog.get_logger(__name__)

GET_MESSAGE_PATH = "/smev/v1/get-message"
ACK_PATH = "/smev/v1/ack"


@dataclass(frozen=True)
class PullQueueOptions:
    """How the pull queue hands out envelopes."""

    visibility_timeout_s: float = 60.0
    """An envelope handed out and not acknowledged within this is handed out again."""


@dataclass(frozen=True)
class QueuedMessage:
    message_id: uuid.UUID
    recipient: str
    message_type: str
    payload: bytes
    deliveries: int
    """How many times it was handed out, this time included."""


class PullQueue:
    """The queue in PostgreSQL; any number of readers and writers may share it."""

    def __init__(self, pool: asyncpg.Pool, *, options: PullQueueOptions = PullQueueOptions()) -> None:
        self._pool = pool
        self._visibility = timedelta(seconds=options.visibility_timeout_s)

    async def put(self, *, message_id: uuid.UUID, recipient: str, message_type: str, payload: bytes) -> bool:
        """Enqueue once per MessageID; False when it was there already."""
        status = await self._execute(
            """INSERT INTO smev_queue (message_id, recipient, message_type, payload) VALUES ($1, $2, $3, $4)
               ON CONFLICT (message_id) DO NOTHING""", message_id, recipient, message_type, payload)
        return status.endswith(" 1")

    async def get(self, *, recipient: str, message_type: str | None = None) -> QueuedMessage | None:
        """The oldest visible unacknowledged envelope for ``recipient``, now hidden for the timeout."""
        with outage_as_failure("the pull queue"):
            row = await self._pool.fetchrow(
                """UPDATE smev_queue SET visible_at = now() + $3::interval, deliveries = deliveries + 1
                   WHERE message_id = (
                       SELECT message_id FROM smev_queue
                       WHERE recipient = $1 AND acked_at IS NULL AND visible_at <= now()
                         AND ($2::text IS NULL OR message_type = $2)
                       ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                   RETURNING message_id, recipient, message_type, payload, deliveries""",
                recipient, message_type, self._visibility)
        return QueuedMessage(**dict(row)) if row else None

    async def ack(self, *, message_id: uuid.UUID, accepted: bool) -> None:
        """Acknowledge for good; repeating an Ack is harmless, an unknown MessageID is a fault."""
        status = await self._execute(
            """UPDATE smev_queue SET acked_at = coalesce(acked_at, now()), accepted = coalesce(accepted, $2)
               WHERE message_id = $1""", message_id, accepted)
        if status.endswith(" 0"):
            raise TargetMessageIsNotFound(f"no message {message_id} in the queue")
        log.info("smev_queue.acked", message_id=str(message_id), accepted=accepted)

    async def _execute(self, sql: str, *args: object) -> str:
        with outage_as_failure("the pull queue"):
            return await self._pool.execute(sql, *args)


class GetMessageRequest(BaseModel):
    recipient: str = Field(min_length=1, max_length=64, description="Whose queue to read, e.g. RSMEV.")
    message_type: str | None = Field(default=None, max_length=64,
                                     description="Only envelopes whose primary content is this, e.g. TermGradeFinalized.")


class AckRequest(BaseModel):
    message_id: uuid.UUID = Field(description="MessageID of the envelope being acknowledged.")
    accepted: bool = Field(default=True, description="False: refused by the reader; it is not handed out again.")


def pull_queue_router(queue: PullQueue) -> APIRouter:
    """``POST /smev/v1/get-message`` and ``POST /smev/v1/ack`` over ``queue``."""
    router = fault_router(tags=["interagency pull queue"])

    @router.post(GET_MESSAGE_PATH, responses={200: {"content": {"application/xml": {}}}, 204: {}})
    async def get_message(body: GetMessageRequest, request: Request) -> Response:
        """The oldest unacknowledged signed envelope for the recipient, or 204 when there is none."""
        message = await queue.get(recipient=body.recipient, message_type=body.message_type)
        if message is None:
            return Response(status_code=204)
        log.info("smev_queue.handed_out", message_id=str(message.message_id), recipient=message.recipient,
                 deliveries=message.deliveries)
        return Response(message.payload, media_type="application/xml",
                        headers={"X-Ejx-Message-Id": str(message.message_id)})

    @router.post(ACK_PATH)
    async def ack(body: AckRequest) -> Response:
        """Acknowledge an envelope; TargetMessageIsNotFound for a MessageID the queue never held."""
        await queue.ack(message_id=body.message_id, accepted=body.accepted)
        return JSONResponse({"message_id": str(body.message_id), "accepted": body.accepted})

    return router
