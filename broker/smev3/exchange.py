"""The SMEV 3 operations ejx serves: a SOAP request's bytes in, a SOAP answer's bytes out, faults included.

GetRequest hands out the broadcasts agencies pull; SendRequest takes e-diary requests
(:mod:`broker.smev3.diary`), whose responses GetResponse hands out; Ack acknowledges both.

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
from broker.smev3.calls import (
    Ack,
    Call,
    GetMessage,
    QueueQuery,
    SendRequest,
    parse_request,
)
from broker.smev3.diary import DiaryService
from broker.smev3.diary_documents import DiaryQuery
from broker.smev3.messages import (
    answer,
    fault,
    get_status_response,
    queue_statistics_response,
)
from broker.smev3.queue import Queued, SmevQueue
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
    query: DiaryQuery | None = None
    """A SendRequest's DiaryRequest, validated."""


class MessageExchange:
    """GetRequest, GetResponse, Ack, GetStatus and GetIncomingQueueStatistics over the participants' queues,
    and SendRequest for the e-diary service (without ``diary``, SendRequest is UnknownMessageType)."""

    def __init__(self, *, queue: SmevQueue, participants: Participants, diary: DiaryService | None = None,
                 options: ExchangeOptions = ExchangeOptions()) -> None:
        self._queue = queue
        self._participants = participants
        self._diary = diary
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
        except Exception:  # a bug: the caller still gets a SOAP fault, not FastAPI's plain-text 500
            log.exception("smev3.internal_error", version=version.value)
            return to_bytes(fault(version, Failure("ejx could not process the request (an internal error, "
                                                   "logged as smev3.internal_error); try again later"))), True

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
            return await self._operate(signed, participant, body)

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
        if isinstance(call, SendRequest):
            if self._diary is None:
                raise UnknownMessageType("SendRequest: this endpoint serves no requests")
            return _Signed(call, verified.certificate_der, self._diary.read(call))
        return _Signed(call, verified.certificate_der)

    async def _operate(self, signed: _Signed, participant: Participant, body: bytes) -> etree._Element:
        call, version = signed.call, signed.call.version
        if isinstance(call, GetMessage):
            kind = Queued.REQUEST if call.operation == "GetRequest" else Queued.RESPONSE
            handed = await self._queue.take(recipient=participant.mnemonic, version=version, kind=kind,
                                            namespace_uri=call.namespace_uri, root_local_name=call.root_local_name,
                                            received=body)
            if handed is None:
                return answer(version, call.operation)
            log.info("smev3.handed_out", message_id=str(handed.message_id), kind=kind.value,
                     deliveries=handed.deliveries)
            return answer(version, call.operation, hardened.parse_trusted(handed.request_message))
        if isinstance(call, Ack):
            await self._queue.ack(recipient=participant.mnemonic, message_id=uuid.UUID(call.message_id),
                                  accepted=call.accepted, received=body)
            if call.accepted:
                log.info("smev3.acknowledged", message_id=call.message_id, accepted=True)
            else:  # final, as SMEV has it: the recipient refused our signatures and ignores the message
                log.warning("smev3.refused_by_recipient", message_id=call.message_id, recipient=participant.mnemonic)
            return answer(version, "Ack")
        if isinstance(call, SendRequest) and self._diary is not None and signed.query is not None:
            return await self._diary.send_request(call, signed.query, participant, body)
        if call.operation == "GetStatus":
            return get_status_response(version)  # statuses of messages ejx took: none are kept
        if call.operation == "GetIncomingQueueStatistics":
            return queue_statistics_response(version, await self._queue.pending(recipient=participant.mnemonic))
        raise UnknownMessageType(f"{call.operation}: ejx takes no such messages from participants")
