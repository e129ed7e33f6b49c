"""Reference receivers: what a portal and an interagency system should do with what ejx sends them.

Both verify every signature against the trusted certificates, take header and
content only from what the signature covers, and record every MessageID
durably before they answer (portal) or acknowledge (interagency), so a repeat
is recognised as a duplicate after a restart too. A TestMessage is recorded as
such and never applied. They serve tests, the demo and vendors' own testing.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from lxml import etree

from broker.delivery.answers import fault_xml
from broker.domain.faults import Failure, Fault, MessageIsAlreadySent
from broker.domain.model import NAMESPACE as EVENTS_NAMESPACE
from broker.infra.backoff import pause
from broker.infra.postgres import outage_as_failure
from broker.smev3.client import Smev3Client
from broker.xml import hardened
from broker.xml.envelope import EnvelopeHeader, MessageType
from broker.xml.signing import VerifiedEnvelope, Verifier

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReceiverReport:
    """What a receiver has seen so far."""

    receiver: str
    received: int
    """Distinct MessageIDs."""
    duplicates: int
    """Repeats of a MessageID already received."""
    test_messages: int
    """Received with TestMessage: recorded, not applied."""
    bad_signatures: int
    """Envelopes refused (signature or structure)."""


class ReceiverLog:
    """Durable record of every MessageID a receiver took and every envelope it refused."""

    def __init__(self, pool: asyncpg.Pool, receiver: str) -> None:
        self._pool = pool
        self.receiver = receiver

    async def record(self, header: EnvelopeHeader, content: etree._Element) -> bool:
        """Record a verified message (header and content from what the signature covers); False when its
        MessageID was received before."""
        with outage_as_failure("the receiver log"):
            first = await self._pool.fetchval(
                """INSERT INTO receiver_messages AS m (receiver, message_id, reference_message_id, sender, recipient,
                                                       message_type, test, event_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (receiver, message_id)
                   DO UPDATE SET copies = m.copies + 1, last_received_at = now()
                   RETURNING copies = 1""",
                self.receiver, header.message_id, header.reference_message_id, header.sender, header.recipient,
                etree.QName(content).localname, header.test, _event_id(content))
        return bool(first)

    async def reject(self, fault: Fault) -> None:
        with outage_as_failure("the receiver log"):
            await self._pool.execute(
                "INSERT INTO receiver_rejects (receiver, code, description) VALUES ($1, $2, $3)",
                self.receiver, fault.code, fault.description[:2000])

    async def report(self) -> ReceiverReport:
        row = await self._pool.fetchrow(
            """SELECT count(*) AS received, coalesce(sum(copies - 1), 0) AS duplicates,
                      count(*) FILTER (WHERE test) AS test_messages,
                      (SELECT count(*) FROM receiver_rejects WHERE receiver = $1) AS bad_signatures
               FROM receiver_messages WHERE receiver = $1""", self.receiver)
        return ReceiverReport(receiver=self.receiver, **{k: int(v) for k, v in dict(row).items()})

    async def message_ids(self) -> dict[uuid.UUID, int]:
        """Every MessageID received, with how many copies arrived."""
        rows = await self._pool.fetch("SELECT message_id, copies FROM receiver_messages WHERE receiver = $1",
                                      self.receiver)
        return {row["message_id"]: row["copies"] for row in rows}


def _event_id(content: etree._Element) -> uuid.UUID | None:
    """The carried event's id (signed content), so receipts can be matched to events."""
    text = content.findtext(f"{{{EVENTS_NAMESPACE}}}EventId")
    return uuid.UUID(text) if text else None


async def receive_envelope(data: bytes, *, verifier: Verifier, receipts: ReceiverLog) -> tuple[VerifiedEnvelope, bool]:
    """Parse, verify and record one envelope; a refused one is recorded and re-raised."""
    try:
        verified = verifier.verify(hardened.parse(data))
    except Fault as fault:
        if fault.retriable:
            raise
        await receipts.reject(fault)
        log.warning("receiver.refused", receiver=receipts.receiver, code=fault.code, error=fault.description)
        raise
    first = await receipts.record(verified.header, verified.content)
    header = verified.header
    log.info("receiver.received" if first else "receiver.duplicate", receiver=receipts.receiver,
             message_id=str(header.message_id), reference_message_id=str(header.reference_message_id or ""),
             message_type=etree.QName(verified.content).localname, test=header.test)
    return verified, first


def portal_receiver_app(*, verifier: Verifier, receipts: ReceiverLog) -> FastAPI:
    """The reference portal: ``POST /envelopes`` takes one signed envelope.

    200 for a new MessageID, 409 MessageIsAlreadySent for a repeat, 400 with the
    fault for a bad signature or document, 503 when it cannot record.
    """
    app = FastAPI(title="ejx reference portal receiver")

    @app.post("/envelopes")
    async def receive(request: Request) -> Response:
        try:
            verified, first = await receive_envelope(await request.body(), verifier=verifier, receipts=receipts)
        except Fault as fault:
            return Response(fault_xml(fault), status_code=fault.http_status, media_type="application/xml")
        if not first:
            fault = MessageIsAlreadySent(f"message {verified.header.message_id} was received before")
            return Response(fault_xml(fault), status_code=fault.http_status, media_type="application/xml")
        return JSONResponse({"message_id": str(verified.header.message_id), "status": "received"})

    @app.get("/report")
    async def report() -> JSONResponse:
        return JSONResponse((await receipts.report()).__dict__)

    return app


@dataclass(frozen=True)
class PullClientOptions:
    """How the reference interagency system pulls its SMEV 3 queue."""

    recipient: str = "RSMEV"
    """The participant this client is registered as (its queue is chosen by its certificate)."""
    in_flight: int = 8
    """Readers at once: each does GetRequest, verify, record, Ack in turn."""
    idle_poll_s: float = 0.2
    """A reader's wait after an empty GetRequestResponse."""


class InteragencyPullClient:
    """An agency's information system on ejx's SMEV 3 endpoint, through the reference client
    (:mod:`broker.smev3.client`): every message verified, recorded, then acknowledged; a refused one is
    recorded as a bad signature and acknowledged with accepted=false, as SMEV prescribes."""

    def __init__(self, client: Smev3Client, *, receipts: ReceiverLog,
                 options: PullClientOptions = PullClientOptions()) -> None:
        self._client = client
        self._receipts = receipts
        self._options = options

    async def pull_once(self) -> bool:
        """Take one message if there is one; False when the queue was empty."""
        pulled = await self._client.get_request()
        if pulled is None:
            return False
        if pulled.message is None:
            await self._receipts.reject(pulled.refusal)
            await self._client.ack(pulled.message_id, accepted=False)
            return True
        message = pulled.message
        header = EnvelopeHeader(message_id=message.message_id, message_type=MessageType.BROADCAST,
                                sender=message.sender, recipient=self._options.recipient,
                                sending_timestamp=message.sending_timestamp, test=message.test,
                                reference_message_id=message.reference_message_id)
        first = await self._receipts.record(header, message.content)
        log.info("receiver.received" if first else "receiver.duplicate", receiver=self._receipts.receiver,
                 message_id=str(message.message_id), message_type=etree.QName(message.content).localname,
                 test=message.test)
        await self._client.ack(message.message_id, accepted=True)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Pull with ``in_flight`` readers until ``stop``; an outage is waited out, never skipped past.

        Each message is acknowledged only after it is recorded, so one a reader never
        acknowledges comes back after the queue's visibility timeout.
        """
        try:
            await asyncio.gather(*(self._read(stop) for _ in range(max(1, self._options.in_flight))))
        finally:
            await self._client.aclose()

    async def _read(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                took = await self.pull_once()
            except Failure as fault:
                log.warning("receiver.pull_failed", error=fault.description)
                took = False
            if not took:
                await pause(stop, self._options.idle_poll_s)
