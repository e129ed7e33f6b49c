"""Destinations: where the relay hands an outbox message, behind one small interface.

A destination returns when the receiver holds the message durably and raises a
:class:`~broker.domain.faults.Fault` otherwise; the fault's ``retriable`` decides between
a later attempt and the dead state. "The receiver already has it"
(MessageIsAlreadySent) counts as delivered: every hop is at-least-once and
receivers de-duplicate by MessageID.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import h11
import orjson
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from broker.delivery.answers import answer_fault
from broker.delivery.outbox import OutboxMessage
from broker.domain.faults import (
    Failure,
    Fault,
    MessageIsAlreadySent,
    fault_from_code,
)
from broker.infra.http_client import Answer, KeepAliveClient
from broker.smev3.outgoing import RequestMessages
from broker.smev3.queue import SmevQueue

log = structlog.get_logger(__name__)

MESSAGE_ID_HEADER = "X-Ejx-Message-Id"


class Destination(Protocol):
    """One delivery channel, named like ``outbox.destination``."""

    name: str
    max_batch: int
    """Most messages :meth:`deliver_batch` takes at once; 1: the destination takes one at a time."""

    async def deliver(self, message: OutboxMessage) -> None:
        """Return once the receiver holds ``message``; raise a Fault otherwise."""

    async def deliver_batch(self, messages: Sequence[OutboxMessage]) -> list[Fault | None]:
        """Per message, in order: None once the receiver holds it, else its fault; raise a Fault when the
        whole batch failed. Called only when ``max_batch`` > 1."""

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
    max_batch: int = 200
    """Envelopes per POST to the batch endpoint (when one is configured)."""


class PortalDestination:
    """HTTP(S) POST of signed envelopes to the portal; 2xx or MessageIsAlreadySent = delivered.

    With ``batch_url`` (the portal's ``/envelopes/batch``) a batch of envelopes, each signed on its own,
    travels in one POST and comes back with a receipt per envelope: one round trip and one commit at the
    portal for many messages. The single-envelope endpoint stays for one message at a time.
    """

    name = "portal"

    def __init__(self, url: str, *, batch_url: str | None = None, options: PortalOptions = PortalOptions()) -> None:
        if not url:
            raise Failure("portal delivery needs EJX_PORTAL_URL")
        self._client, self._batch_client = (
            KeepAliveClient(target, timeout_s=options.timeout_s, max_connections=options.max_connections,
                            max_answer_bytes=options.max_answer_bytes) if target else None
            for target in (url, batch_url))
        self.max_batch = options.max_batch if batch_url else 1

    async def deliver(self, message: OutboxMessage) -> None:
        answer = await _posted(self._client, message.payload, headers=(
            ("Content-Type", "application/xml; charset=utf-8"), (MESSAGE_ID_HEADER, str(message.message_id))))
        if answer.is_success:
            return
        fault = answer_fault(answer.status, answer.header("content-type"), answer.body)
        if isinstance(fault, MessageIsAlreadySent):
            log.info("portal.already_sent", message_id=str(message.message_id))
            return
        raise fault

    async def deliver_batch(self, messages: Sequence[OutboxMessage]) -> list[Fault | None]:
        if self._batch_client is None:
            raise Failure("the portal's batch endpoint is not configured")
        body = orjson.dumps({"envelopes": [{"key": m.partition_key, "envelope": base64.b64encode(m.payload).decode()}
                                           for m in messages]})
        answer = await _posted(self._batch_client, body, headers=(("Content-Type", "application/json"),))
        if not answer.is_success:
            # A refusal of the batch as a whole is no verdict on any one envelope (those come as receipts):
            # every envelope is retried, as in an outage (and, like one, within the relay's attempt budget).
            fault = answer_fault(answer.status, answer.header("content-type"), answer.body)
            raise fault if fault.retriable else Failure(
                f"the portal refused the batch as a whole ({fault.code}: {fault.description}); "
                f"its {len(messages)} envelopes are retried")
        try:
            receipts = orjson.loads(answer.body)["receipts"]
            if len(receipts) != len(messages):
                raise ValueError(f"{len(receipts)} receipts for {len(messages)} envelopes")
            return [_receipt_fault(receipt, message) for receipt, message in zip(receipts, messages, strict=True)]
        except (ValueError, KeyError, TypeError) as error:
            raise Failure(f"portal answered a batch without its receipts: {error!r}") from error

    async def close(self) -> None:
        for client in (self._client, self._batch_client):
            if client is not None:
                await client.aclose()


async def _posted(client: KeepAliveClient, body: bytes, *, headers: Sequence[tuple[str, str]]) -> Answer:
    """The portal's answer to one POST; timeouts and broken connections are retriable failures."""
    try:
        return await client.post(body, headers=headers)
    except TimeoutError as error:
        raise Failure(f"portal timed out: {error!r}") from error
    except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as error:
        raise Failure(f"portal unreachable: {error!r}") from error


def _topic_headers(message: OutboxMessage) -> list[tuple[str, bytes]]:
    headers = [("message_id", str(message.message_id).encode()), ("message_type", message.message_type.encode())]
    if message.reference_message_id:
        headers.append(("reference_message_id", str(message.reference_message_id).encode()))
    return headers


def _receipt_fault(receipt: dict, message: OutboxMessage) -> Fault | None:
    """What one receipt of a batch says about its envelope: None when the portal holds it."""
    status = receipt["status"]
    if status == "received":
        return None
    if status == "duplicate":
        log.info("portal.already_sent", message_id=str(message.message_id))
        return None
    if status != "refused":
        raise ValueError(f"unknown receipt status {status!r}")
    fault = fault_from_code(str(receipt.get("code")), str(receipt.get("description") or ""))
    return None if isinstance(fault, MessageIsAlreadySent) else fault


class InteragencyDestination:
    """Produce the envelope to the interagency topic (key = recipient) AND enqueue its SMEV 3 RequestMessage.

    The queue is what agencies pull (``POST /smev3/1.2``, ``/smev3/1.3``); the topic is
    kept for ejx's own readers (archive, audit), carrying ejx's envelope. Both are
    idempotent by MessageID: the queue's primary key keeps the first copy and its
    signatures, and readers of the topic de-duplicate by the ``message_id`` header, the
    same MessageID the agency sees. So a retry after a half-done delivery is harmless.
    "Delivered" for this outbox row means durably in the SMEV queue; the agency's Ack is
    recorded there.

    A batch is all or nothing: its envelopes go to the topic, then its RequestMessages are signed
    in one worker-thread call and enqueued in one transaction (one append to the message log, whose
    head every writer shares). A failure anywhere fails the whole batch, which is then retried whole.
    """

    name = "interagency"

    def __init__(self, *, producer: AIOKafkaProducer, topic: str, queue: SmevQueue,
                 messages: RequestMessages, max_batch: int = 100) -> None:
        self._producer = producer
        self._topic = topic
        self._queue = queue
        self._messages = messages
        self.max_batch = max_batch

    async def deliver(self, message: OutboxMessage) -> None:
        await self.deliver_batch([message])

    async def deliver_batch(self, messages: Sequence[OutboxMessage]) -> list[Fault | None]:
        try:
            # Sent in order (one key per recipient, so one partition each), then awaited together.
            sent = [await self._producer.send(self._topic, message.payload, key=message.recipient.encode(),
                                              headers=_topic_headers(message)) for message in messages]
            await asyncio.gather(*sent)
        except KafkaError as error:
            raise Failure(f"interagency topic {self._topic}: {error!r}") from error
        held = await self._queue.held([message.message_id for message in messages])
        # An earlier attempt enqueued the held ones: their signatures stay.
        todo = [message for message in messages if message.message_id not in held]
        requests = await asyncio.to_thread(lambda: [self._messages.build(message) for message in todo])
        fresh = await self._queue.put(requests)
        for request in requests:
            if request.message_id in fresh:
                log.info("smev_queue.enqueued", message_id=str(request.message_id), recipient=request.recipient,
                         root=request.root_local_name, algorithm=self._messages.algorithm)
        return [None] * len(messages)

    async def close(self) -> None:
        """The producer belongs to whoever built it."""
