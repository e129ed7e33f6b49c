"""The ingest core: vendor input → canonical events → authorised → deduplicated → on Kafka.

Transport-free (no FastAPI, no CSV): the REST API, the CSV import and the
OneRoster adapter all hand raw events to :class:`IngestService`.

Two policies over the same pipeline:

* :meth:`IngestService.submit` — a REST request: all or nothing. Every bad
  event is listed in one InvalidContent (or AccessDenied) fault and nothing is
  produced; otherwise every event is on Kafka before it returns.
* :meth:`IngestService.import_batch` — a file import: bad rows are reported
  back and the good ones published (a 1 GB export with three bad lines must
  still load).

ejx assigns ``event_id`` (a UUIDv5 of the idempotency key, so a repeated event
has the same id even if the ledger never heard of it) and ``recorded_at``;
``source_system`` is the authenticated vendor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from lxml import etree

from adapters.ledger import IngestLedger, LedgerEntry
from adapters.payload import (
    EVENTS_NS,
    PayloadFormat,
    PayloadLimits,
    json_events,
    payload_format,
    xml_events,
)
from adapters.problems import Problem
from adapters.publisher import EventRecord, EventSink
from broker.access.registry import Registry, Vendor
from broker.domain import model
from broker.domain.faults import (
    AccessDenied,
    Failure,
    Fault,
    InvalidContent,
    UnknownMessageType,
)
from broker.ops import metrics
from broker.xml import hardened
from broker.xml.schemas import Schemas

log = structlog.get_logger(__name__)

# Fixed forever: event ids already issued are derived from it.
EVENT_ID_NAMESPACE = uuid.UUID("0d3f8a52-7c1e-5b6a-9e40-6a7c2b1e0e1d")

T = TypeVar("T")

HEADER_EVENT_TYPE = "event_type"
HEADER_IDEMPOTENCY_KEY = "idempotency_key"
HEADER_EVENT_ID = "event_id"
HEADER_SOURCE_SYSTEM = "source_system"


def event_id_for(idempotency_key: str) -> uuid.UUID:
    """The event_id of the event with this key, the same on every retry."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, idempotency_key)


@dataclass(frozen=True)
class CanonicalEvent:
    """A validated event in its canonical form, ready for the ledger and the topic."""

    index: int
    event: model.Event
    xml: bytes

    @property
    def idempotency_key(self) -> str:
        return self.event.idempotency_key

    def ledger_entry(self) -> LedgerEntry:
        e = self.event
        return LedgerEntry(self.idempotency_key, e.event_id, e.source_system, e.source_record_id, int(e.version),
                           _event_type(e), e.school_id)

    def record(self) -> EventRecord:
        e = self.event
        return EventRecord(
            key=e.school_id.encode("utf-8"), value=self.xml,
            headers=((HEADER_EVENT_TYPE, _event_type(e).encode()),
                     (HEADER_IDEMPOTENCY_KEY, self.idempotency_key.encode("utf-8")),
                     (HEADER_EVENT_ID, str(e.event_id).encode()),
                     (HEADER_SOURCE_SYSTEM, e.source_system.encode("utf-8"))))


@dataclass(frozen=True)
class Receipt:
    """What the vendor is told about one accepted event."""

    index: int
    event_id: uuid.UUID
    idempotency_key: str
    duplicate: bool
    """Accepted before (or earlier in the same request): not produced again."""

    def as_dict(self) -> dict[str, object]:
        """As JSON-ready data for orjson, which writes the UUID as its canonical text."""
        return {"index": self.index, "event_id": self.event_id,
                "idempotency_key": self.idempotency_key, "duplicate": self.duplicate}


class Canonicaliser:
    """Raw vendor events (JSON objects or XML elements) → canonical events, or problems."""

    def __init__(self, schemas: Schemas, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._schemas = schemas
        self._clock = clock

    def from_dicts(self, vendor: Vendor, items: Iterable[tuple[int, object]]
                   ) -> tuple[list[CanonicalEvent], list[Problem]]:
        built, bad = [], []
        for index, item in items:
            try:
                built.append(self._from_dict(vendor, index, item))
            except Fault as fault:
                bad.append(_problem(index, fault, default_path="/"))
        return self._validated(built, bad, default_path=lambda _: "/")

    def from_elements(self, vendor: Vendor, elements: Iterable[tuple[int, etree._Element]]
                      ) -> tuple[list[CanonicalEvent], list[Problem]]:
        built, bad, received = [], [], {}
        for index, element in elements:
            received[index] = element
            try:
                self._schemas.validate_event(element)
                event = _model_call(model.event_from_xml, element)
                event = dataclasses.replace(event, event_id=event_id_for(event.idempotency_key),
                                            recorded_at=self._clock())
                built.append(self._canonical(index, event, id_from=event.idempotency_key))
            except Fault as fault:
                bad.append(_problem(index, fault, default_path=hardened.location(element)))
        return self._validated(built, bad, default_path=lambda index: hardened.location(received[index]))

    def _from_dict(self, vendor: Vendor, index: int, item: object) -> CanonicalEvent:
        if not isinstance(item, dict):
            raise InvalidContent(f"an event is a JSON object, not {type(item).__name__}")
        data = dict(item)
        data.setdefault("source_system", vendor.vendor_id)
        # Assigned by ejx. The id is derived from the key as the model will spell it; if the
        # guess is wrong, _canonical corrects it (one more build instead of one per event).
        guess = f"{data.get('source_system')}/{data.get('source_record_id')}/{data.get('version')}"
        data["event_id"] = event_id_for(guess)
        data["recorded_at"] = self._clock()
        return self._canonical(index, _model_call(model.event_from_dict, data), id_from=guess)

    def _canonical(self, index: int, event: model.Event, *, id_from: str) -> CanonicalEvent:
        """``id_from``: the key the event's id was derived from; fixed here if it is not the real key."""
        if event.idempotency_key != id_from:
            event = dataclasses.replace(event, event_id=event_id_for(event.idempotency_key))
        return CanonicalEvent(index, event, event.to_xml())

    def _validated(self, built: list[CanonicalEvent], bad: list[Problem], *, default_path: Callable[[int], str]
                   ) -> tuple[list[CanonicalEvent], list[Problem]]:
        """Our own output is validated too, so the topic holds only events valid against the XSD: the exact
        bytes, as EventBatch documents (one parse and schema pass, not one per event: a third of the cost).
        They were serialised a moment ago by the model, not received: a parser that resolves nothing will do."""
        good = []
        for start in range(0, len(built), VALIDATED_AT_ONCE):
            chunk = built[start:start + VALIDATED_AT_ONCE]
            try:
                self._schemas.validate_event(hardened.parse_trusted(_batch_document(chunk)))
            except Fault:  # a model/XSD mismatch: name the culprits, event by event
                for c in chunk:
                    try:
                        self._schemas.validate_event(hardened.parse_trusted(c.xml))
                        good.append(c)
                    except Fault as fault:
                        bad.append(_problem(c.index, fault, default_path=default_path(c.index)))
            else:
                good.extend(chunk)
        return good, sorted(bad, key=lambda p: p.index)


@dataclass(frozen=True)
class ParseOptions:
    """Where and how long a request's parsing and validation may take."""

    workers: int = 2
    """Threads parsing and validating requests; the event loop never does it."""
    deadline_s: float = 15.0
    """Seconds a request may wait for and spend in parsing before it is refused (503, retriable)."""


class IngestService:
    """Takes authenticated vendors' events to the topic exactly once."""

    def __init__(self, *, registry: Registry, ledger: IngestLedger, sink: EventSink, schemas: Schemas,
                 limits: PayloadLimits = PayloadLimits(), parsing: ParseOptions = ParseOptions(),
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.registry = registry
        self.ledger = ledger
        self.limits = limits
        self._sink = sink
        self._canonical = Canonicaliser(schemas, clock=clock)
        self._parsing = parsing
        self._workers = ThreadPoolExecutor(max_workers=parsing.workers, thread_name_prefix="ejx-parse")

    def close(self) -> None:
        """Stop the parsing threads (a parse in flight finishes; nothing new starts)."""
        self._workers.shutdown(wait=False, cancel_futures=True)

    async def off_loop(self, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` in a parsing thread within the deadline, so no body can stall the loop.

        Past the deadline the request is refused as retriable (the server was busy); the
        thread finishes on its own, bounded by the parser's limits.
        """
        future = asyncio.get_running_loop().run_in_executor(self._workers, work, *args)
        try:
            return await asyncio.wait_for(future, self._parsing.deadline_s)
        except TimeoutError:
            raise Failure(f"the request could not be parsed within {self._parsing.deadline_s:g} s; "
                          "try again later") from None

    async def submit(self, vendor: Vendor, body: bytes, content_type: str | None) -> list[Receipt]:
        """One REST request, all or nothing: receipts once Kafka has every event, else a Fault."""
        good, bad = await self.off_loop(self.canonical_events, vendor, body, payload_format(content_type))
        return await self.submit_canonical(vendor, good, bad)

    def canonical_events(self, vendor: Vendor, body: bytes, kind: PayloadFormat
                         ) -> tuple[list[CanonicalEvent], list[Problem]]:
        """Parse and validate a request body (CPU-bound: runs in a parsing thread)."""
        if kind is PayloadFormat.JSON:
            return self._canonical.from_dicts(vendor, enumerate(json_events(body, self.limits)))
        return self._canonical.from_elements(vendor, enumerate(xml_events(body, self.limits)))

    async def submit_dicts(self, vendor: Vendor, items: Sequence[tuple[int, object]]) -> list[Receipt]:
        """Like :meth:`submit` for (index, event in JSON form) pairs, e.g. mapped from OneRoster."""
        good, bad = await self.off_loop(self._canonical.from_dicts, vendor, items)
        return await self.submit_canonical(vendor, good, bad)

    async def submit_canonical(self, vendor: Vendor, good: list[CanonicalEvent],
                               bad: list[Problem]) -> list[Receipt]:
        if bad:
            raise self._refused(vendor, InvalidContent, bad, total=len(good) + len(bad))
        denied = await self._denied(vendor, good)
        if denied:
            raise self._refused(vendor, AccessDenied, denied, total=len(good))
        return await self._publish(vendor, good)

    async def import_batch(self, vendor: Vendor, items: Sequence[tuple[int, object]]
                           ) -> tuple[list[Receipt], list[Problem]]:
        """A batch of import rows: publish the good ones (all or nothing), report the bad ones."""
        good, bad = self._canonical.from_dicts(vendor, items)
        denied = await self._denied(vendor, good)
        if denied:
            refused = {p.index for p in denied}
            good = [c for c in good if c.index not in refused]
            bad = sorted(bad + denied, key=lambda p: p.index)
        _rejected(vendor, bad)
        return await self._publish(vendor, good), bad

    async def _denied(self, vendor: Vendor, events: Sequence[CanonicalEvent]) -> list[Problem]:
        owners = await self.registry.school_vendors(c.event.school_id for c in events)
        denied = []
        for c in events:
            if c.event.source_system != vendor.vendor_id:
                denied.append(Problem(c.index, "/source_system",
                                      f"vendor {vendor.vendor_id!r} may not send for source system "
                                      f"{c.event.source_system!r}", AccessDenied.code))
            elif owners.get(c.event.school_id) != vendor.vendor_id:
                denied.append(Problem(c.index, "/school_id",
                                      f"school {c.event.school_id!r} is not registered to vendor "
                                      f"{vendor.vendor_id!r}", AccessDenied.code))
        return denied

    async def _publish(self, vendor: Vendor, events: Sequence[CanonicalEvent]) -> list[Receipt]:
        if not events:
            return []
        first: dict[str, CanonicalEvent] = {}
        for c in events:
            first.setdefault(c.idempotency_key, c)
        async with self.ledger.claim([c.ledger_entry() for c in first.values()]) as claim:
            fresh = {entry.idempotency_key for entry in claim.fresh}
            await self._sink.publish([first[key].record() for key in first if key in fresh])
        receipts = []
        produced: Counter[str] = Counter()
        # A line per event costs more than validating it (the ledger keeps key → event_id): one per request.
        per_event = log.is_enabled_for(logging.DEBUG)
        for c in events:
            key = c.idempotency_key
            produced_here = key in fresh and first[key] is c
            event_id = claim.known.get(key, c.event.event_id)
            receipts.append(Receipt(c.index, event_id, key, duplicate=not produced_here))
            if produced_here:
                produced[_event_type(c.event)] += 1
            if per_event:
                log.debug("ingest.event_accepted", vendor_id=vendor.vendor_id, index=c.index, event_id=str(event_id),
                          event_type=_event_type(c.event), school_id=c.event.school_id, idempotency_key=key,
                          duplicate=not produced_here)
        for event_type, count in produced.items():
            metrics.EVENTS_INGESTED.labels(vendor.vendor_id, event_type).inc(count)
        log.info("ingest.accepted", vendor_id=vendor.vendor_id, events=len(events),
                 produced=sum(produced.values()), duplicates=len(events) - sum(produced.values()))
        return receipts

    def _refused(self, vendor: Vendor, kind: type[Fault], problems: list[Problem], *, total: int) -> Fault:
        _rejected(vendor, problems)
        verb = "invalid" if kind is InvalidContent else "not allowed for this vendor"
        return kind(f"{len(problems)} of {total} event(s) {verb}; nothing was accepted",
                    details={"errors": [p.as_dict() for p in problems]})


def _rejected(vendor: Vendor, problems: Sequence[Problem]) -> None:
    """Each refused event is logged and counted (``ejx_events_rejected``) by its fault code."""
    for problem in problems:
        log.info("ingest.rejected", vendor_id=vendor.vendor_id, **problem.as_dict())
        metrics.event_rejected(problem.code)


VALIDATED_AT_ONCE = 1000  # events in one EventBatch document of output validation: the schema's maximum
_BATCH_START = f'<EventBatch xmlns="{EVENTS_NS}">'.encode()


def _batch_document(events: Sequence[CanonicalEvent]) -> bytes:
    """The events' own documents, declarations dropped, as the children of one EventBatch."""
    return b"".join([_BATCH_START, *(c.xml.partition(b"?>")[2] if c.xml.startswith(b"<?xml") else c.xml
                                     for c in events), b"</EventBatch>"])


def _event_type(event: model.Event) -> str:
    return event.type.value


def _model_call(function: Callable, argument: object) -> model.Event:
    """Model errors and malformed values become InvalidContent."""
    try:
        return function(argument)
    except model.UnknownEventType as error:
        raise UnknownMessageType(str(error), details={"path": "/type"}) from None
    except model.ModelError as error:
        raise InvalidContent(str(error), details={"path": f"/{error.field}"} if error.field else {}) from None


def _problem(index: int, fault: Fault, *, default_path: str) -> Problem:
    errors = fault.details.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        reason = "; ".join(str(e.get("reason") or e.get("message") or e) for e in errors)
        return Problem(index, str(first.get("path") or default_path), reason, fault.code)
    return Problem(index, str(fault.details.get("path") or default_path), fault.description, fault.code)
