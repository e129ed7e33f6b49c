"""ejx's reference e-diary requester: SendRequest of a DiaryRequest, GetResponse until it is answered, Ack.

What a portal's own client must do, written once and used by ``ejx smev3 request``
and by the demo alike: fix the MessageID once (a version-1 UUID) and keep it across
retries, so a SendRequest whose answer was lost (SMEVFailure, a timeout) can be sent
again without being processed twice; verify every signature of every answer; read
the diary only from the content ejx signed, after checking it against diary.xsd;
and acknowledge the response only once it is read. The wait is bounded: a response
that does not come in time is a clear Failure, never a hang.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import structlog

from broker.domain.faults import Failure, Fault
from broker.smev3.client import ReceivedResponse, Smev3Client
from broker.smev3.diary_documents import (
    REQUEST_ROOT,
    RESPONSE_ROOT,
    DiaryQuery,
    diary_request,
    read_diary_response,
)
from broker.smev3.messages import sender_provided_request_data
from broker.smev3.wire import Version
from broker.xml.envelope import new_message_id
from broker.xml.schemas import Schemas

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RequesterOptions:
    """How long the requester keeps trying."""

    wait_s: float = 30.0
    """Longest wait for the response, from the first SendRequest."""
    poll_s: float = 0.2
    """Pause between GetResponses that found nothing, and between retries of a failed SendRequest."""
    test: bool = False
    """Send a TestMessage: answered, but not audited as a real read."""


@dataclass(frozen=True)
class DiaryAnswer:
    """What came back: the diary (DiaryReader's shape), or the rejection's code and description."""

    message_id: uuid.UUID
    """The request's MessageID."""
    response: ReceivedResponse
    diary: dict | None
    rejection: tuple[str, str] | None
    accepted_at: datetime
    """The exchange's SendingTimestamp of the SendRequestResponse."""

    @property
    def outcome(self) -> str:
        """answered, or the rejection's code (NO_DATA, ACCESS_DENIED, FAILURE…)."""
        return "answered" if self.rejection is None else self.rejection[0]


async def request_diary(client: Smev3Client, query: DiaryQuery, *, version: Version, schemas: Schemas,
                        options: RequesterOptions = RequesterOptions()) -> DiaryAnswer:
    """Ask for one pupil's diary and wait for the answer; Failure when none comes within ``options.wait_s``."""
    message_id = new_message_id()
    data = sender_provided_request_data(version, message_id=str(message_id), content=diary_request(query),
                                        transaction_code=REQUEST_ROOT if version is Version.V1_2 else None,
                                        test=options.test)
    deadline = time.monotonic() + options.wait_s
    accepted_at = await _until(deadline, partial(client.send_request, data), options,
                               f"SendRequest {message_id}")
    log.info("smev3_requester.sent", message_id=str(message_id), pupil_id=query.pupil_id)
    while True:
        response = await _until(deadline, client.get_response, options, f"GetResponse for {message_id}")
        if response is not None and response.original_message_id == message_id:
            break
        if response is not None:  # another request's answer: left for whoever waits for it (it comes back)
            log.info("smev3_requester.not_ours", message_id=str(response.message_id),
                     original_message_id=str(response.original_message_id))
        if time.monotonic() >= deadline:
            raise Failure(f"no response to MessageID {message_id} within {options.wait_s} s; "
                          f"it stays queued for a later GetResponse")
        await asyncio.sleep(options.poll_s)
    diary = None
    if response.content is not None:
        await asyncio.to_thread(schemas.validate_diary, response.content, RESPONSE_ROOT)
        diary = read_diary_response(response.content)
    await client.ack(response.message_id)
    rejection = response.rejections[0] if response.rejections else None
    log.info("smev3_requester.answered", message_id=str(message_id), response_message_id=str(response.message_id),
             outcome=rejection[0] if rejection else "answered")
    return DiaryAnswer(message_id, response, diary, rejection, accepted_at)


async def _until(deadline: float, call, options: RequesterOptions, what: str):  # noqa: ANN001, ANN202
    """``await call()``, again after a retriable fault (SMEVFailure, unreachable) until the deadline."""
    while True:
        try:
            return await call()
        except Fault as fault:
            if not fault.retriable or time.monotonic() + options.poll_s >= deadline:
                raise
            log.warning("smev3_requester.retrying", what=what, code=fault.code, error=fault.description)
            await asyncio.sleep(options.poll_s)
