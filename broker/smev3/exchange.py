"""The SMEV 3 operations ejx serves: a SOAP request's bytes in, a SOAP answer's bytes out, faults included.

A caller is whoever signed: parsing (the one hardened parser) and signature
verification run in a worker thread under a deadline, off the event loop, and the
participant is the owner of the verified certificate — never a name the caller
writes. What an operation reads (the selector, the acknowledged MessageID) comes from
the very element the signature covers, found by its Id, which must be unique in the
document, so a wrapped copy elsewhere can never be the one read.

Every failure is an answer too: a soap:Fault of the endpoint's version, its detail
the SMEV fault named by the project fault's code (an outage of PostgreSQL is the
retriable SMEVFailure).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from lxml import etree

from broker.access.participants import Participant, Participants
from broker.domain.faults import (
    Failure,
    Fault,
    InvalidContent,
    SignatureVerificationFault,
    UnknownMessageType,
)
from broker.smev3.calls import Ack, Call, GetMessage, QueueQuery, parse_request
from broker.smev3.messages import (
    answer,
    fault,
    get_status_response,
    queue_statistics_response,
)
from broker.smev3.queue import SmevQueue
from broker.smev3.wire import Version, to_bytes
from broker.xml import hardened
from broker.xml.signing import verify_reference

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ExchangeOptions:
    """Limits of the SMEV 3 endpoint."""

    max_body_bytes: int = 1_048_576
    """Longest SOAP request read; a request is a few kilobytes."""
    deadline_s: float = 5.0
    """Longest parse + signature verification of one request before it is answered SMEVFailure."""
    clock_skew: timedelta = timedelta(minutes=30)
    """How far a caller's signed Timestamp may be from ejx's clock, either way."""


@dataclass(frozen=True)
class _Signed:
    call: Call
    certificate_der: bytes


class MessageExchange:
    """GetRequest, GetResponse, Ack, GetStatus and GetIncomingQueueStatistics over the participants' queues."""

    def __init__(self, *, queue: SmevQueue, participants: Participants,
                 options: ExchangeOptions = ExchangeOptions()) -> None:
        self._queue = queue
        self._participants = participants
        self._options = options
        self._limits = hardened.XmlLimits(max_bytes=options.max_body_bytes)

    @property
    def options(self) -> ExchangeOptions:
        return self._options

    async def handle(self, version: Version, body: bytes) -> tuple[bytes, bool]:
        """The answer to one request and whether it is a fault (HTTP 500 in SOAP 1.1)."""
        try:
            return to_bytes(await self._answer(version, body)), False
        except Fault as error:
            log.warning("smev3.refused", version=version.value, code=error.code, error=error.description)
            return to_bytes(fault(version, error)), True

    async def _answer(self, version: Version, body: bytes) -> etree._Element:
        try:
            signed = await asyncio.wait_for(asyncio.to_thread(self._verified, version, body),
                                            self._options.deadline_s)
        except TimeoutError:
            raise Failure(f"the request was not verified within {self._options.deadline_s} s") from None
        call = signed.call
        participant = await self._participants.owner(signed.certificate_der)
        with structlog.contextvars.bound_contextvars(participant=participant.mnemonic, operation=call.operation,
                                                     version=version.value):
            return await self._operate(call, participant)

    def _verified(self, version: Version, body: bytes) -> _Signed:
        """Parse, read and verify (worker thread): the caller's signature must cover the element read."""
        call = parse_request(hardened.parse(body, limits=self._limits))
        if call.version is not version:
            raise UnknownMessageType(f"an SMEV {call.version.value} request sent to the {version.value} endpoint")
        if call.signature is None:
            raise SignatureVerificationFault("CallerInformationSystemSignature is missing",
                                             details={"reason": "NoSignatureFound"})
        verified = verify_reference(call.signature, at=datetime.now(UTC))
        if verified.reference_id != call.signed.get("Id"):
            raise SignatureVerificationFault(
                f"the signature covers #{verified.reference_id}, not the request's "
                f"{etree.QName(call.signed).localname}", details={"reason": "IncorrectSignatureTarget"})
        if isinstance(call, (GetMessage, QueueQuery)):
            skew = abs(datetime.now(UTC) - call.timestamp)
            if skew > self._options.clock_skew:
                raise InvalidContent(f"Timestamp {call.timestamp.isoformat()} is {skew} away from ejx's clock "
                                     f"(at most {self._options.clock_skew})")
        return _Signed(call, verified.certificate_der)

    async def _operate(self, call: Call, participant: Participant) -> etree._Element:
        version = call.version
        if isinstance(call, GetMessage) and call.operation == "GetRequest":
            handed = await self._queue.take(recipient=participant.mnemonic, version=version,
                                            namespace_uri=call.namespace_uri, root_local_name=call.root_local_name)
            if handed is None:
                return answer(version, "GetRequest")
            log.info("smev3.handed_out", message_id=str(handed.message_id), deliveries=handed.deliveries)
            return answer(version, "GetRequest", hardened.parse_trusted(handed.request_message))
        if isinstance(call, GetMessage):
            return answer(version, "GetResponse")  # ejx sends broadcasts only: no responses ever wait
        if isinstance(call, Ack):
            await self._queue.ack(recipient=participant.mnemonic, message_id=uuid.UUID(call.message_id),
                                  accepted=call.accepted)
            log.info("smev3.acknowledged", message_id=call.message_id, accepted=call.accepted)
            return answer(version, "Ack")
        if call.operation == "GetStatus":
            return get_status_response(version)  # statuses are of messages a participant sent: none yet
        if call.operation == "GetIncomingQueueStatistics":
            return queue_statistics_response(version, await self._queue.pending(recipient=participant.mnemonic))
        raise UnknownMessageType(f"{call.operation}: ejx takes no messages from participants yet")
