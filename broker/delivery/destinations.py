"""Destinations: where the relay hands an outbox message, behind one small interface.

A destination returns when the receiver holds the message durably and raises a
:class:`~broker.domain.faults.Fault` otherwise; the fault's ``retriable`` decides between
a later attempt and the dead state. "The receiver already has it"
(MessageIsAlreadySent) counts as delivered: every hop is at-least-once and
receivers de-duplicate by MessageID.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import h11
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from lxml import etree

from broker.delivery.outbox import OutboxMessage
from broker.delivery.pull_queue import PullQueue
from broker.domain.faults import (
    AccessDenied,
    DestinationOverflow,
    Failure,
    Fault,
    InvalidContent,
    MessageIsAlreadySent,
    fault_from_code,
)
from broker.xml import hardened

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
    """Per request, connecting included; a timeout is a retriable failure (keep it below the relay's lease)."""
    max_connections: int = 64
    """Concurrent requests (persistent HTTP/1.1 connections) to the portal."""
    max_answer_bytes: int = 1 << 20
    """Longest answer body read; a fault is a few hundred bytes, the rest of a longer one is dropped."""


@dataclass(frozen=True)
class Answer:
    """A receiver's HTTP answer."""

    status: int
    headers: tuple[tuple[str, str], ...]
    """Names in lower case."""
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((value for key, value in self.headers if key == name), default)


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed before it answered a byte: try a fresh one."""


class _Connection:
    """One persistent HTTP/1.1 connection (h11 state machine over asyncio streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.CLIENT)

    @property
    def usable(self) -> bool:
        return not (self._writer.is_closing() or self._reader.at_eof())

    async def exchange(self, request: h11.Request, body: bytes, *, max_answer_bytes: int) -> tuple[Answer, bool]:
        """Send one request, read its answer: (answer, whether the connection may carry another)."""
        self._writer.write(b"".join((self._h11.send(request), self._h11.send(h11.Data(data=body)),
                                     self._h11.send(h11.EndOfMessage()))))
        response: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                data = await self._reader.read(65536)
                if not data and response is None and self._h11.their_state is h11.SEND_RESPONSE:
                    raise _StaleConnection()
                self._h11.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                if size < max_answer_bytes:
                    chunks.append(bytes(event.data[:max_answer_bytes - size]))
                size += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the receiver closed the connection mid-answer")
            # InformationalResponse (100 Continue): keep reading.
        assert response is not None
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers)
        reusable = self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
        if reusable:
            self._h11.start_next_cycle()
        return Answer(response.status_code, headers, b"".join(chunks)), reusable

    def close(self) -> None:
        self._writer.close()


class KeepAliveClient:
    """POSTs to one URL over up to ``max_connections`` persistent HTTP/1.1 connections.

    The relay's hot path: each POST is one write and one read on a kept-alive
    connection, ~0.1 ms of CPU, where an httpx AsyncClient spends ~1.5 ms (its
    pool and anyio layers) and so capped a relay at ~200 deliveries/s on two
    cores. No redirects, no proxies, no cookies: a receiver endpoint needs none.
    """

    def __init__(self, url: str, *, timeout_s: float, max_connections: int, max_answer_bytes: int = 1 << 20) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Failure(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._timeout_s = timeout_s
        self._max_answer_bytes = max_answer_bytes
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []

    async def post(self, body: bytes, *, headers: Sequence[tuple[str, str]] = ()) -> Answer:
        """One POST; raises OSError/ConnectionError, TimeoutError or h11.ProtocolError when it fails."""
        request = h11.Request(method="POST", target=self._target, headers=[
            ("Host", self._authority), ("Content-Length", str(len(body))), *headers])
        async with self._slots, asyncio.timeout(self._timeout_s):
            while self._idle:
                connection = self._idle.pop()
                if not connection.usable:
                    connection.close()
                    continue
                try:
                    return await self._exchange(connection, request, body)
                except (_StaleConnection, ConnectionResetError, BrokenPipeError):
                    continue  # closed by the server while idle; the request never reached it
            connection = _Connection(*await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None))
            try:
                return await self._exchange(connection, request, body)
            except _StaleConnection as error:
                raise ConnectionResetError("the receiver closed a new connection without answering") from error

    async def _exchange(self, connection: _Connection, request: h11.Request, body: bytes) -> Answer:
        try:
            answer, reusable = await connection.exchange(request, body, max_answer_bytes=self._max_answer_bytes)
        except BaseException:
            connection.close()
            raise
        if reusable:
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


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
            root = hardened.parse(body)
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
    return hardened.to_bytes(root)


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
                   ("message_type", message.message_type.encode())]
        if message.reference_message_id:
            headers.append(("reference_message_id", str(message.reference_message_id).encode()))
        try:
            await self._producer.send_and_wait(self._topic, message.payload, key=message.recipient.encode(),
                                               headers=headers)
        except KafkaError as error:
            raise Failure(f"interagency topic {self._topic}: {error!r}") from error
        await self._queue.put(message_id=message.message_id, recipient=message.recipient,
                              message_type=message.message_type, payload=message.payload)

    async def close(self) -> None:
        """The producer belongs to whoever built it."""
