"""Destinations: where the relay hands an outbox message, behind one small interface.

A destination returns when the receiver holds the message durably and raises a
:class:`~broker.faults.Fault` otherwise; the fault's ``retriable`` decides between
a later attempt and the dead state. "The receiver already has it"
(MessageIsAlreadySent) counts as delivered: every hop is at-least-once and
receivers de-duplicate by MessageID.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from lxml import etree

from broker import xmlsafe
from broker.faults import (AccessDenied, DestinationOverflow, Failure, Fault, InvalidContent, MessageIsAlreadySent,
                           fault_from_code)
from broker.outbox import OutboxMessage
from broker.smev_queue import PullQueue

log = structlog.get_logger(__name__)

FAULT_NS = "urn://ejx/fault/1"
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
    """Per request; a timeout is a retriable failure (keep it below the relay's lease)."""
    max_connections: int = 16
    """Concurrent requests to the portal."""


class PortalDestination:
    """HTTP(S) POST of the signed envelope to the portal; 2xx or MessageIsAlreadySent = delivered."""

    name = "portal"

    def __init__(self, url: str, *, options: PortalOptions = PortalOptions(),
                 client: httpx.AsyncClient | None = None) -> None:
        if not url:
            raise Failure("portal delivery needs EJX_PORTAL_URL")
        self._url = url
        self._client = client or httpx.AsyncClient(
            timeout=options.timeout_s,
            limits=httpx.Limits(max_connections=options.max_connections,
                                max_keepalive_connections=options.max_connections))

    async def deliver(self, message: OutboxMessage) -> None:
        try:
            response = await self._client.post(self._url, content=message.payload, headers={
                "Content-Type": "application/xml; charset=utf-8", MESSAGE_ID_HEADER: str(message.message_id)})
        except httpx.TimeoutException as error:
            raise Failure(f"portal timed out: {error!r}") from error
        except httpx.TransportError as error:
            raise Failure(f"portal unreachable: {error!r}") from error
        if response.is_success:
            return
        fault = answer_fault(response.status_code, response.headers.get("content-type", ""), response.content)
        if isinstance(fault, MessageIsAlreadySent):
            log.info("portal.already_sent", message_id=str(message.message_id))
            return
        raise fault

    async def close(self) -> None:
        await self._client.aclose()


def answer_fault(status: int, content_type: str, body: bytes) -> Fault:
    """The fault a receiver's non-2xx answer stands for.

    The fault code in the body (JSON ``{"code", "description"}`` or an XML
    ``urn://ejx/fault/1`` Fault) names it; 5xx is retriable whatever the body
    says; a 4xx without a readable code is refused for good, except 408/429.
    """
    code, description = _read_fault(content_type, body)
    if status >= 500:
        return Failure(f"HTTP {status}: {code or ''} {description or ''}".strip())
    if code:
        return fault_from_code(code, description or f"HTTP {status}")
    if status in (408, 429):
        return DestinationOverflow(f"HTTP {status}")
    if status in (401, 403):
        return AccessDenied(f"HTTP {status}")
    return InvalidContent(f"receiver refused the message: HTTP {status}")


def _read_fault(content_type: str, body: bytes) -> tuple[str | None, str | None]:
    if not body:
        return None, None
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            return None, None
        if isinstance(data, Mapping) and isinstance(data.get("code"), str):
            return data["code"], str(data.get("description") or "")
        return None, None
    if "xml" in content_type:
        try:
            root = xmlsafe.parse(body)
        except InvalidContent:
            return None, None
        if root.tag == f"{{{FAULT_NS}}}Fault":
            return (root.findtext(f"{{{FAULT_NS}}}Code"), root.findtext(f"{{{FAULT_NS}}}Description"))
    return None, None


def fault_xml(fault: Fault) -> bytes:
    """The XML form of a fault (schemas/fault.xsd), for SMEV-style callers."""
    root = etree.Element(f"{{{FAULT_NS}}}Fault", nsmap={None: FAULT_NS})
    etree.SubElement(root, f"{{{FAULT_NS}}}Code").text = fault.code
    etree.SubElement(root, f"{{{FAULT_NS}}}Description").text = fault.description[:4000] or fault.code
    etree.SubElement(root, f"{{{FAULT_NS}}}Retriable").text = "true" if fault.retriable else "false"
    return xmlsafe.to_bytes(root)


class InteragencyDestination:
    """Produce to the interagency topic (key = recipient) AND enqueue on the SMEV-style pull queue.

    Both steps are idempotent by MessageID for the reader (the queue's primary key;
    consumers of the topic de-duplicate by the ``message_id`` header), so a retry
    after a half-done delivery is harmless.
    """

    name = "interagency"

    def __init__(self, *, producer: AIOKafkaProducer, topic: str, queue: PullQueue) -> None:
        self._producer = producer
        self._topic = topic
        self._queue = queue

    async def deliver(self, message: OutboxMessage) -> None:
        headers = [("message_id", str(message.message_id).encode()),
                   ("content_type", message.content_type.encode())]
        if message.reference_message_id:
            headers.append(("reference_message_id", str(message.reference_message_id).encode()))
        try:
            await self._producer.send_and_wait(self._topic, message.payload, key=message.recipient.encode(),
                                               headers=headers)
        except KafkaError as error:
            raise Failure(f"interagency topic {self._topic}: {error!r}") from error
        await self._queue.put(message_id=message.message_id, recipient=message.recipient,
                              content_type=message.content_type, payload=message.payload)

    async def close(self) -> None:
        """The producer belongs to whoever built it."""
