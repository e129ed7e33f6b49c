"""Helpers of the delivery tests: a real uvicorn server on 127.0.0.1, signing pairs, envelopes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from lxml import etree

from broker.delivery.destinations import MESSAGE_ID_HEADER, PortalDestination
from broker.delivery.outbox import NewMessage
from broker.delivery.relay import Relay, RelayOptions
from broker.xml import hardened
from broker.xml.envelope import build_envelope, new_message_id
from broker.xml.signing import Verifier, XmlDsigSigner, keys

EVENT = """<GradePosted xmlns="urn://ejx/events/1">
  <EventId>{event_id}</EventId><SchemaVersion>1.0</SchemaVersion><SourceSystem>dnevnik-plus</SourceSystem>
  <SourceRecordId>{record}</SourceRecordId><Version>{version}</Version>
  <OccurredAt>2026-10-05T09:15:00+03:00</OccurredAt><RecordedAt>2026-10-05T09:20:31+03:00</RecordedAt>
  <SchoolId>{school}</SchoolId><AcademicYear>2026-2027</AcademicYear><ActorId>tc-77b0c3d2</ActorId>
  <StudentId>st-77k3f9q2m</StudentId><ClassUnit>5А</ClassUnit><SubjectCode>MATH</SubjectCode>
  <TeacherId>tc-77b0c3d2</TeacherId><LessonId>lesson-88121</LessonId><LessonDate>2026-10-05</LessonDate>
  <WorkType>Контрольная работа</WorkType><Weight>2</Weight><Mark><FivePoint>5</FivePoint></Mark>
  <CountsInAverage>true</CountsInAverage><TermId>2026-2027-q1</TermId>
</GradePosted>"""


def event_xml(record: str, *, school: str = "sch-77-0412", version: int = 1, kind: str = "GradePosted") -> bytes:
    """A canonical GradePosted (or, by renaming the root, another type's shape for routing only)."""
    text = EVENT.format(event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{record}/{version}"), record=record,
                        version=version, school=school)
    if kind != "GradePosted":
        text = text.replace("GradePosted", kind)
    return text.encode()


def signing_pair() -> tuple[XmlDsigSigner, Verifier]:
    key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    certificate = keys.self_signed_certificate(key)
    return XmlDsigSigner(key, certificate), Verifier([certificate])


def signed_message(signer: XmlDsigSigner, *, destination: str = "portal", recipient: str = "EPGU",
                   partition_key: str = "sch-1", record: str | None = None) -> NewMessage:
    record = record or uuid.uuid4().hex
    message_id = new_message_id()
    envelope = signer.sign(build_envelope(hardened.parse(event_xml(record)), recipient=recipient,
                                          message_id=message_id))
    return NewMessage(message_id=message_id, destination=destination, partition_key=partition_key,
                      payload=hardened.to_bytes(envelope), recipient=recipient, message_type="GradePosted",
                      idempotency_key=f"dnevnik-plus:{record}:1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(app, *, port: int | None = None) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn in this event loop; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def root_name(payload: bytes) -> str:
    return etree.QName(hardened.parse(payload)).localname


async def eventually(check, *, timeout: float = 60.0, every: float = 0.05):
    """Poll ``check`` (async, returns a truthy value when done) until it holds; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(every)


class Outage:
    """ASGI wrapper answering 500 to the first ``failures`` requests (or all while ``down``)."""

    def __init__(self, app, *, failures: int = 0, down: bool = False) -> None:
        self.app = app
        self.only: str | None = None
        """When set, only requests for this MessageID (X-Ejx-Message-Id) are refused."""
        self.failures = failures
        self.down = down
        self.refused = 0

    async def __call__(self, scope, receive, send):
        targeted = self.only is None or (b"x-ejx-message-id", self.only.encode()) in scope.get("headers", [])
        if scope["type"] == "http" and targeted and (self.down or self.failures > 0):
            self.failures -= 1
            self.refused += 1
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"portal is down"})
            return
        await self.app(scope, receive, send)


def term_grade_xml(record: str, *, school: str = "sch-77-0412", version: int = 1) -> bytes:
    """A canonical TermGradeFinalized, built through the model."""
    from datetime import UTC, datetime

    from broker.domain.model import Mark, MarkScale, TermGradeFinalized, TermPeriod
    now = datetime(2026, 12, 25, 9, 0, tzinfo=UTC)
    return TermGradeFinalized(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{record}/{version}"), source_system="dnevnik-plus",
        source_record_id=record, version=version, occurred_at=now, recorded_at=now, school_id=school,
        academic_year="2026-2027", actor_id="tc-77b0c3d2", student_id="st-77k3f9q2m", subject_code="MATH",
        term_id="2026-2027-q2", period=TermPeriod.QUARTER, mark=Mark(MarkScale.FIVE_POINT, "4")).to_xml()


def counting_portal(*, delay_s: float = 0.0) -> tuple[FastAPI, Counter, list[uuid.UUID]]:
    """A portal that only counts MessageIDs (X-Ejx-Message-Id), in arrival order; each answer takes
    ``delay_s``. For tests about claims and order, not signatures."""
    app = FastAPI()
    copies: Counter = Counter()
    arrival: list[uuid.UUID] = []

    @app.post("/envelopes")
    async def receive(request: Request) -> JSONResponse:
        await request.body()
        message_id = uuid.UUID(request.headers[MESSAGE_ID_HEADER])
        copies[message_id] += 1
        arrival.append(message_id)
        if delay_s:
            await asyncio.sleep(delay_s)
        return JSONResponse({"status": "received"})

    return app, copies, arrival


async def two_relays_deliver(pool, portal_url: str, *, options: RelayOptions, rows: int, timeout: float) -> None:
    """Run two relays against one portal until ``rows`` outbox rows are delivered, then stop both."""
    destinations = [PortalDestination(portal_url) for _ in range(2)]
    stop = asyncio.Event()
    relays = [asyncio.create_task(Relay(pool, {"portal": d}, options=options).run(stop)) for d in destinations]
    try:
        async def all_delivered() -> bool:
            return await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'delivered'") == rows
        await eventually(all_delivered, timeout=timeout, every=0.2)
    finally:
        stop.set()
        await asyncio.gather(*relays)
        for destination in destinations:
            await destination.close()


def metric(name: str, **labels: str) -> float:
    """The current value of one ejx metric sample (0 when it was never recorded)."""
    from broker.ops.metrics import REGISTRY
    return REGISTRY.get_sample_value(name, labels) or 0.0
