"""Destinations: where the relay hands an outbox message, behind one small interface.

A destination returns when the receiver holds the message durably and raises a
:class:`~broker.domain.faults.Fault` otherwise; the fault's ``retriable`` decides between
a later attempt and the dead state. "The receiver already has it"
(MessageIsAlreadySent) counts as delivered: every hop is at-least-once and
receivers de-duplicate by MessageID.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import h11
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from broker.delivery.answers import answer_fault
from broker.delivery.outbox import OutboxMessage
from broker.domain.faults import (
    Failure,
    MessageIsAlreadySent,
)
from broker.infra.http_client import KeepAliveClient
from broker.smev3.outgoing import RequestMessages
from broker.smev3.queue import SmevQueue

log = structlog.get_logger(__name__)

MESSAGE_ID_HEADER = "X-Ejx-Message-Id"


class Destination(Protocol):
    """One delivery channel, named like ``outbox.destination``."""

    name: str

    async def deliver(self, message: OutboxMessage) -> None:
        """Return once the receiver holds ``message``; raise a Fault otherwise."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class PortalOptions:
    """How envelopes are pushed to the portal."""

    timeout_s: float = 10.0
    """Per request, connecting included; a timeout is a retriable failure (keep it below the relay's lease)."""
    max_connections: int = 64
    """Concurrent requests (persistent HTTP/1.1 connections) to the portal."""
    max_answer_bytes: int = 1 << 20
    """Longest answer body read; a fault is a few hundred bytes, the rest of a longer one is dropped."""


class PortalDestination:
    """HTTP(S) POST of the signed envelope to the portal; 2xx or MessageIsAlreadySent = delivered."""

    name = "portal"

    def __init__(self, url: str, *, options: PortalOptions = PortalOptions()) -> None:
        if not url:
            raise Failure("portal delivery needs EJX_PORTAL_URL")
        self._client = KeepAliveClient(url, timeout_s=options.timeout_s, max_connections=options.max_connections,
                                       max_answer_bytes=options.max_answer_bytes)

    async def deliver(self, message: OutboxMessage) -> None:
        try:
            answer = await self._client.post(message.payload, headers=(
                ("Content-Type", "application/xml; charset=utf-8"), (MESSAGE_ID_HEADER, str(message.message_id))))
        except TimeoutError as error:
            raise Failure(f"portal timed out: {error!r}") from error
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as error:
            raise Failure(f"portal unreachable: {error!r}") from error
        if answer.is_success:
            return
        fault = answer_fault(answer.status, answer.header("content-type"), answer.body)
        if isinstance(fault, MessageIsAlreadySent):
            log.info("portal.already_sent", message_id=str(message.message_id))
            return
        raise fault

    async def close(self) -> None:
        await self._client.aclose()


class InteragencyDestination:
    """Produce the envelope to the interagency topic (key = recipient) AND enqueue its SMEV 3 RequestMessage.

    The queue is what agencies pull (``POST /smev3/1.2``, ``/smev3/1.3``); the topic is
    kept for ejx's own readers (archive, audit), carrying ejx's envelope. Both are
    idempotent by MessageID: the queue's primary key keeps the first copy and its
    signatures, and readers of the topic de-duplicate by the ``message_id`` header, the
    same MessageID the agency sees. So a retry after a half-done delivery is harmless.
    "Delivered" for this outbox row means durably in the SMEV queue; the agency's Ack is
    recorded there.
    """

    name = "interagency"

    def __init__(self, *, producer: AIOKafkaProducer, topic: str, queue: SmevQueue,
                 messages: RequestMessages) -> None:
        self._producer = producer
        self._topic = topic
        self._queue = queue
        self._messages = messages

    async def deliver(self, message: OutboxMessage) -> None:
        headers = [("message_id", str(message.message_id).encode()),
                   ("message_type", message.message_type.encode())]
        if message.reference_message_id:
            headers.append(("reference_message_id", str(message.reference_message_id).encode()))
        try:
            await self._producer.send_and_wait(self._topic, message.payload, key=message.recipient.encode(),
                                               headers=headers)
        except KafkaError as error:
            raise Failure(f"interagency topic {self._topic}: {error!r}") from error
        if await self._queue.holds(message.message_id):
            return  # an earlier attempt enqueued it: its signatures stay
        request = await asyncio.to_thread(self._messages.build, message)
        if await self._queue.put(request):
            log.info("smev_queue.enqueued", message_id=str(message.message_id), recipient=message.recipient,
                     root=request.root_local_name, algorithm=self._messages.algorithm)

    async def close(self) -> None:
        """The producer belongs to whoever built it."""
