"""XSD validation: the schemas are compiled once, at start, and reused for every document.

lxml keeps one error log per compiled schema, so concurrent validations would
read each other's errors; each schema is therefore used under its own lock
(a validation takes microseconds, and lxml releases the GIL inside it).
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

from broker.domain import model
from broker.domain.faults import InvalidContent, UnknownMessageType
from broker.domain.model import Event, ModelError, UnknownEventType
from broker.xml import hardened

EVENTS_NS = model.NAMESPACE
DIARY_NS = "urn://ejx/diary/1"
"""The e-diary service's documents (diary.xsd): DiaryRequest and DiaryResponse."""
EVENT_ROOTS = frozenset({*model.EVENT_TYPES, "EventBatch"})
"""Local names of the elements that may be the root of an event document."""


def default_schema_dir() -> Path:
    """The XSDs shipped inside the package (a wheel), else the repository's schemas/."""
    packaged = Path(__file__).resolve().parent / "xsd"
    return packaged if (packaged / "events.xsd").is_file() else Path(__file__).resolve().parents[2] / "schemas"


class _Validator:
    """One compiled schema and the lock that keeps its error log to one caller."""

    def __init__(self, path: Path) -> None:
        # Our own files; the base URL lets envelope.xsd find the events.xsd it imports.
        self.schema = etree.XMLSchema(hardened.parse_trusted(path.read_bytes(), base_url=str(path)))
        self.lock = threading.Lock()

    def check(self, element: etree._Element) -> None:
        with self.lock:
            if self.schema.validate(element):
                return
            errors = list(self.schema.error_log)
        raise _invalid(element, errors)


class Schemas:
    """The compiled event, envelope, fault and e-diary schemas; build once with :meth:`load`."""

    def __init__(self, *, events: _Validator, envelope: _Validator, fault: _Validator, diary: _Validator) -> None:
        self._events = events
        self._fault = fault
        self._envelope = envelope
        self._diary = diary

    @classmethod
    def load(cls, schema_dir: Path | None = None) -> Schemas:
        """Compile every schema in ``schema_dir`` (default: :func:`default_schema_dir`)."""
        directory = schema_dir or default_schema_dir()
        return cls(events=_Validator(directory / "events.xsd"),
                   envelope=_Validator(directory / "envelope.xsd"),
                   fault=_Validator(directory / "fault.xsd"),
                   diary=_Validator(directory / "diary.xsd"))

    def validate_event(self, element: etree._Element) -> None:
        """Check one event or an EventBatch; an unknown root is ``UnknownMessageType``."""
        name = etree.QName(element)
        if name.localname not in EVENT_ROOTS:
            raise UnknownMessageType(
                f"line {element.sourceline}, {hardened.location(element)}: {name.localname} is not an event "
                f"type (known: {', '.join(sorted(EVENT_ROOTS))})")
        if name.namespace != EVENTS_NS:
            raise InvalidContent(f"line {element.sourceline}, {hardened.location(element)}: {name.localname} "
                                 f"must be in namespace {EVENTS_NS}, not {name.namespace or 'none'}")
        self._events.check(element)

    def validate_envelope(self, element: etree._Element) -> None:
        """Check an envelope, its event content included (envelope.xsd imports events.xsd)."""
        self._envelope.check(element)

    def validate_fault(self, element: etree._Element) -> None:
        self._fault.check(element)

    def validate_diary(self, element: etree._Element, root_name: str) -> None:
        """Check a DiaryRequest or DiaryResponse (diary.xsd imports the events' id and value types);
        any other root is ``UnknownMessageType``: the e-diary service takes nothing else."""
        if element.tag != f"{{{DIARY_NS}}}{root_name}":
            raise UnknownMessageType(f"{element.tag} is not a {{{DIARY_NS}}}{root_name}")
        self._diary.check(element)

    def parse_event(self, data: bytes, *, limits: hardened.XmlLimits = hardened.XmlLimits()
                    ) -> tuple[etree._Element, Event]:
        """Parse, validate and read one event document: its root and its event. An EventBatch, even of one,
        is refused: an envelope carries one event."""
        root = hardened.parse(data, limits=limits)
        self.validate_event(root)
        if etree.QName(root).localname == "EventBatch":
            raise InvalidContent("expected one event, not an EventBatch")
        return root, read_events(root)[0]

    def check_event(self, data: bytes, *, limits: hardened.XmlLimits = hardened.XmlLimits()) -> Event:
        """Parse, validate and read one event document: the whole way in for untrusted bytes."""
        return self.parse_event(data, limits=limits)[1]

    def check_events(self, data: bytes, *, limits: hardened.XmlLimits = hardened.XmlLimits()
                     ) -> tuple[Event, ...]:
        """Like :meth:`check_event`, for a document that is one event or an EventBatch."""
        root = hardened.parse(data, limits=limits)
        self.validate_event(root)
        return read_events(root)


def read_events(root: etree._Element) -> tuple[Event, ...]:
    """The model's events of a validated root, model errors mapped to faults."""
    try:
        return model.events_from_xml(root)
    except UnknownEventType as error:
        raise UnknownMessageType(str(error)) from None
    except ModelError as error:
        raise InvalidContent(str(error)) from None


def _invalid(element: etree._Element, errors: list[etree._LogEntry]) -> InvalidContent:
    """The schema's first complaint, with its line and a path of local names."""
    if not errors:
        return InvalidContent("document does not match its schema")
    first = errors[0]
    path = _readable_path(element, first.path) if first.path else None
    reason = first.message.replace(f"{{{EVENTS_NS}}}", "")
    where = f"line {first.line}, {path}" if path else f"line {first.line}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InvalidContent(f"{where}: {reason}{more}",
                          details={"line": first.line, "path": path or "", "reason": reason})


def _readable_path(element: etree._Element, path: str) -> str:
    """Turn libxml2's ``/*/*[11]/*`` into ``/GradePosted/Mark/FivePoint``.

    The path starts at the validated element (a subtree is validated as its own
    document), so its first step is dropped and the rest evaluated from there.
    """
    rest = path.split("/", 2)[2] if path.count("/") > 1 else ""
    try:
        found = element.xpath(rest, namespaces={k: v for k, v in element.nsmap.items() if k}) if rest else [element]
    except etree.XPathError:
        return path
    return hardened.location(found[0]) if found and isinstance(found[0], etree._Element) else path
