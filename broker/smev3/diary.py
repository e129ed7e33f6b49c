"""The e-diary service over SMEV 3: a participant's SendRequest of a DiaryRequest in, a signed ResponseMessage
in its response queue out, answered from the e-diary projection.

Where the response is produced: in the SendRequest's own transaction, not by a worker.
The request's record, the response in the requester's queue, the audit record and both
message-log entries commit together or not at all, so there is no "recorded but not
answered yet" state to recover after a crash, and no worker to run, poll or watch. It
is cheap enough to do at once: one indexed read of one pupil's rows and two GOST
signatures (about 0.3 ms, made in a worker thread). If PostgreSQL is down nothing is
recorded and the caller gets the retriable SMEVFailure; its retry — the same
MessageID — is then answered like the first try.

A repeated MessageID is never processed twice: its sender gets the very same signed
SendRequestResponse again; anyone else MessageIsAlreadySent. A TestMessage is
answered like any request but recorded as a test in the audit and counted nowhere.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import asyncpg
import structlog
from lxml import etree

from broker.access.participants import Participant
from broker.analytics.projections.diary import DiaryPeriod, DiaryReader, is_empty
from broker.audit import diary_reads, message_log
from broker.audit.chain import Direction, Entry, Kind
from broker.audit.diary_reads import Channel, DiaryRead
from broker.domain.faults import MessageIsAlreadySent
from broker.infra.postgres import UnitOfWork, outage_as_failure
from broker.ops import metrics
from broker.smev3.calls import SendRequest
from broker.smev3.client_requests import attach_signature, smev_signature
from broker.smev3.diary_documents import (
    REQUEST_ROOT,
    RESPONSE_ROOT,
    DiaryQuery,
    diary_response,
    read_diary_request,
)
from broker.smev3.messages import (
    Metadata,
    accepted,
    response_message,
    sender_provided_response_data,
)
from broker.smev3.outgoing import SenderIdentity
from broker.smev3.queue import QueuedResponse, put_response
from broker.smev3.wire import Version, to_bytes
from broker.xml import hardened
from broker.xml.envelope import new_message_id
from broker.xml.schemas import DIARY_NS, Schemas
from broker.xml.signing import SigningKey

log = structlog.get_logger(__name__)


class Outcome(StrEnum):
    """How a diary request was answered (the audit's outcome)."""

    ANSWERED = "answered"
    NO_DATA = "NO_DATA"
    ACCESS_DENIED = "ACCESS_DENIED"
    FAILURE = "FAILURE"


_REASONS = {
    Outcome.NO_DATA: "no e-diary entries for this pupil in the requested range",
    Outcome.ACCESS_DENIED: "the requesting system is not registered for the e-diary service",
    Outcome.FAILURE: "the e-diary for this range is too large to send; ask for fewer days",
}


@dataclass(frozen=True)
class DiaryOptions:
    """Who may ask, and how large an answer may be."""

    service: str = "diary"
    """The participants' registration (``ejx participants add EPGU --cert … --service diary``) that may ask."""
    max_response_bytes: int = 2 << 20
    """A longer ResponseMessage is replaced by the rejection FAILURE (UNKNOWN_REQUEST_DESCRIPTION in 1.2,
    which has no FAILURE)."""


@dataclass(frozen=True)
class _Signed:
    outcome: Outcome
    message: bytes


_KNOWN = """SELECT requester, version, accepted_answer, pupil_id, date_from, date_to, subject_code, test
              FROM diary_requests WHERE message_id = $1"""


class DiaryService:
    """Takes SendRequests of DiaryRequests; thread-safe parts (:meth:`read`) run in the exchange's worker."""

    def __init__(self, *, pool: asyncpg.Pool, schemas: Schemas, key: SigningKey,
                 sender: SenderIdentity = SenderIdentity(), options: DiaryOptions = DiaryOptions()) -> None:
        self._pool = pool
        self._schemas = schemas
        self._key = key
        self._sender = sender
        self._options = options

    def read(self, call: SendRequest) -> DiaryQuery:
        """Validate the request's business document (worker thread): a DiaryRequest or UnknownMessageType,
        a pupil id that looks like a name or a SNILS InvalidContent."""
        self._schemas.validate_diary(call.content, REQUEST_ROOT)
        return read_diary_request(call.content)

    async def send_request(self, call: SendRequest, query: DiaryQuery, participant: Participant,
                           received: bytes) -> etree._Element:
        """Record the request and queue its response in one transaction; the SendRequestResponse."""
        message_id, requester = uuid.UUID(call.message_id), participant.mnemonic
        with outage_as_failure("the e-diary service"):
            known = await self._pool.fetchrow(_KNOWN, message_id)
            if known is not None:
                return self._repeated(call, query, requester, known)
            answer = await asyncio.to_thread(self._accepted, call.version, call.message_id, requester)
            reply_to = f"{requester}:{call.message_id}"
            response_id = new_message_id()
            allowed = participant.service == self._options.service
            async with UnitOfWork(self._pool) as uow:
                conn = uow.connection
                diary = None
                if allowed:
                    diary = await DiaryReader(conn).diary(query.pupil_id, DiaryPeriod(query.date_from, query.date_to),
                                                          subject_code=query.subject_code)
                signed = await asyncio.to_thread(self._response, call, reply_to, response_id, requester, query,
                                                 diary, allowed)
                inserted = await conn.fetchval(
                    """INSERT INTO diary_requests (message_id, requester, version, pupil_id, date_from, date_to,
                                                   subject_code, test, reply_to, outcome, response_message_id,
                                                   accepted_answer)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                       ON CONFLICT (message_id) DO NOTHING RETURNING true""",
                    message_id, requester, call.version.value, query.pupil_id, query.date_from, query.date_to,
                    query.subject_code, call.test, reply_to, signed.outcome.value, response_id, answer)
                if not inserted:  # the same MessageID, concurrently: the first one's answer stands
                    known = await conn.fetchrow(_KNOWN, message_id)
                    return self._repeated(call, query, requester, known)
                await put_response(conn, QueuedResponse(
                    message_id=response_id, recipient=requester, version=call.version, namespace_uri=DIARY_NS,
                    root_local_name=RESPONSE_ROOT, message=signed.message))
                await diary_reads.record(conn, DiaryRead(
                    Channel.SMEV3, requester, query.pupil_id, query.date_from, query.date_to,
                    outcome=signed.outcome.value, subject_code=query.subject_code, test=call.test,
                    message_id=message_id))
                # Last before the commit: the append holds the log's head until then.
                await message_log.append(conn, [
                    Entry(Direction.IN, requester, message_id, Kind.SMEV3_REQUEST, received),
                    Entry(Direction.OUT, requester, message_id, Kind.SMEV3_RECEIPT, answer),
                    Entry(Direction.OUT, requester, response_id, Kind.SMEV3_RESPONSE, signed.message)])
                await uow.commit()
        if not call.test:
            metrics.DIARY_REQUESTS.labels(signed.outcome.value).inc()
        log.info("smev3.diary_answered", message_id=call.message_id, response_message_id=str(response_id),
                 outcome=signed.outcome.value, test=call.test, pupil_id=query.pupil_id,
                 marks=len(diary["grades"]) if diary else 0)
        return hardened.parse_trusted(answer)

    def _repeated(self, call: SendRequest, query: DiaryQuery, requester: str, known: asyncpg.Record
                  ) -> etree._Element:
        """The first answer again for its sender repeating the same request (same version, same question);
        MessageIsAlreadySent for anyone else, or for another question under the same MessageID, which would
        otherwise get the first one's answer without a word."""
        if known["requester"] != requester or known["version"] != call.version.value:
            raise MessageIsAlreadySent(f"MessageID {call.message_id} was sent already")
        asked = (known["pupil_id"], known["date_from"], known["date_to"], known["subject_code"], known["test"])
        if asked != (query.pupil_id, query.date_from, query.date_to, query.subject_code, call.test):
            raise MessageIsAlreadySent(f"MessageID {call.message_id} was sent already, with another DiaryRequest")
        log.info("smev3.diary_repeated", message_id=call.message_id)
        return hardened.parse_trusted(known["accepted_answer"])

    def _accepted(self, version: Version, message_id: str, requester: str) -> bytes:
        """SendRequestResponse: the request's metadata, signed by ejx (worker thread)."""
        meta = Metadata(message_id=message_id, message_type="REQUEST", sender=(requester, requester),
                        sending_timestamp=datetime.now(UTC), destination_name=self._sender.mnemonic,
                        recipient=(self._sender.mnemonic, self._sender.name), status="requestIsQueued")
        envelope = accepted(version, "SendRequest", meta)
        answer = envelope[0][0]
        attach_signature(answer, "SMEVSignature", smev_signature(answer[0], self._key))
        return to_bytes(envelope)

    def _response(self, call: SendRequest, reply_to: str, response_id: uuid.UUID, requester: str,
                  query: DiaryQuery, diary: dict | None, allowed: bool) -> _Signed:
        """The signed ResponseMessage (worker thread): the diary, or the rejection it comes to."""
        if not allowed:
            return self._signed(call, reply_to, response_id, requester, Outcome.ACCESS_DENIED)
        if diary is None or is_empty(diary):
            return self._signed(call, reply_to, response_id, requester, Outcome.NO_DATA)
        signed = self._signed(call, reply_to, response_id, requester, Outcome.ANSWERED,
                              diary_response(query, diary))
        if len(signed.message) > self._options.max_response_bytes:
            return self._signed(call, reply_to, response_id, requester, Outcome.FAILURE)
        return signed

    def _signed(self, call: SendRequest, reply_to: str, response_id: uuid.UUID, requester: str, outcome: Outcome,
                content: etree._Element | None = None) -> _Signed:
        version = call.version
        rejections = () if content is not None else [(_code(version, outcome), _REASONS[outcome])]
        data = sender_provided_response_data(version, message_id=str(response_id), to=reply_to, content=content,
                                             rejections=rejections)
        meta = Metadata(message_id=str(response_id), message_type="RESPONSE",
                        sender=(self._sender.mnemonic, self._sender.name), sending_timestamp=datetime.now(UTC),
                        destination_name=requester, recipient=(requester, requester))
        built = response_message(version, data, meta, original_message_id=call.message_id,
                                 original_transaction_code=call.transaction_code or (
                                     REQUEST_ROOT if version is Version.V1_2 else None),
                                 reference_message_id=call.reference_message_id,
                                 sender_signature=smev_signature(data, self._key))
        attach_signature(built, "SMEVSignature", smev_signature(built[0], self._key))
        return _Signed(outcome, etree.tostring(built))


def _code(version: Version, outcome: Outcome) -> str:
    """The RejectionReasonCode: 1.2 has no FAILURE, its nearest is UNKNOWN_REQUEST_DESCRIPTION."""
    if outcome is Outcome.FAILURE and version is Version.V1_2:
        return "UNKNOWN_REQUEST_DESCRIPTION"
    return outcome.value
