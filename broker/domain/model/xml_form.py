"""Events as XML of ``urn://ejx/events/1``, with the standard library only.

Writing builds the document as text from a plan made once per event type: the
tags, and how each field's value becomes text. The output is, byte for byte,
what ``xml.etree.ElementTree`` writes for the same tree (UTF-8, a declaration
in single quotes, our namespace as the default one, ``&``, ``<`` and ``>``
escaped in text, ``<Tag />`` for empty text); tests/unit/test_model_forms_equivalence.py
holds it to that.

Reading takes any parsed element with the ElementTree API (lxml's included),
so the model never parses bytes: untrusted bytes go through
:func:`broker.xml.hardened.parse` first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from functools import cache

from broker.domain.model.errors import ModelError
from broker.domain.model.fields import field_specs, text_reader, text_writer, to_text
from broker.domain.model.marks import Mark, MarkScale

NAMESPACE = "urn://ejx/events/1"
NAMESPACE_PREFIX = "{" + NAMESPACE + "}"

MARK_ELEMENTS: dict[MarkScale, str] = {
    MarkScale.FIVE_POINT: "FivePoint",
    MarkScale.PASS_FAIL: "PassFail",
    MarkScale.TEN: "Ten",
    MarkScale.HUNDRED: "Hundred",
    MarkScale.SPECIAL: "Special",
}
"""The element inside Mark that carries each scale (see the XSD on why)."""
_MARK_SCALES = {element: scale for scale, element in MARK_ELEMENTS.items()}

_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>\n"
_DEFAULT_NAMESPACE = f' xmlns="{NAMESPACE}"'
_UNESCAPED = (bool, int, Decimal, uuid.UUID, datetime, date)
"""Kinds whose canonical text is digits, signs, dots, colons and letters: nothing to escape."""


# --- writing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tags:
    """How one element is written around its text."""

    start: str
    end: str
    empty: str
    """What an element with empty text is written as."""

    @classmethod
    def of(cls, name: str) -> _Tags:
        return cls(f"<{name}>", f"</{name}>", f"<{name} />")

    def around(self, text: str) -> str:
        return f"{self.start}{text}{self.end}" if text else self.empty


_MARK_TAGS = {scale: _Tags.of(element) for scale, element in MARK_ELEMENTS.items()}


@dataclass(frozen=True)
class _EventWriting:
    """How one event type is written: as a document's root or inside an EventBatch."""

    root_start: str
    batch_start: str
    end: str
    fields: tuple[tuple[str, type, Callable[[object], str], str, str, str], ...]
    """Per field: name, kind, text, start tag, end tag, empty element; plain tuples, as they unpack fastest."""


def to_bytes_of_event(event) -> bytes:
    """The event as a standalone UTF-8 document, its element the root."""
    parts = [_DECLARATION]
    _write_event(event, parts, root=True)
    return _encode(parts)


def to_bytes_of_batch(events: Iterable) -> bytes:
    """Many events as one EventBatch document."""
    parts = [_DECLARATION, f"<EventBatch{_DEFAULT_NAMESPACE}>"]
    for event in events:
        _write_event(event, parts, root=False)
    parts.append("</EventBatch>")
    return _encode(parts)


def _write_event(event, parts: list[str], *, root: bool) -> None:
    writing = _event_writing(type(event))
    parts.append(writing.root_start if root else writing.batch_start)
    for name, kind, text_of, start, end, empty in writing.fields:
        value = getattr(event, name)
        if value is None:
            continue
        text = text_of(value) if type(value) is kind else _any_text(value)
        parts.append(f"{start}{text}{end}" if text else empty)
    parts.append(writing.end)


def _encode(parts: list[str]) -> bytes:
    # What ElementTree's writer does: UTF-8, and a character reference for what UTF-8 cannot carry.
    return "".join(parts).encode("utf-8", "xmlcharrefreplace")


@cache
def _event_writing(cls: type) -> _EventWriting:
    name = cls.__name__
    fields = []
    for spec in field_specs(cls):
        tags = _Tags.of(spec.element)
        fields.append((spec.name, spec.kind, _content_writer(spec.kind), tags.start, tags.end, tags.empty))
    return _EventWriting(root_start=f"<{name}{_DEFAULT_NAMESPACE}>", batch_start=f"<{name}>", end=f"</{name}>",
                         fields=tuple(fields))


def _content_writer(kind: type) -> Callable[[object], str]:
    """The content of a field's element for a value of exactly ``kind``."""
    if kind is Mark:
        return _mark_content  # type: ignore[return-value]
    if kind is str:
        return _escape  # type: ignore[return-value]
    if issubclass(kind, Enum):
        return {member: _escape(to_text(member)) for member in kind}.__getitem__
    if kind in _UNESCAPED:
        return text_writer(kind)
    return lambda value: _escape(text_writer(kind)(value))


def _any_text(value: object) -> str:
    """A field's element content for a value of any type, as ElementTree would write it."""
    if isinstance(value, Mark):
        return _mark_content(value)
    return _escape(to_text(value))


def _mark_content(mark: Mark) -> str:
    return _MARK_TAGS[mark.scale].around(_escape(mark.value))


def _escape(text: str) -> str:
    """Character data as ElementTree escapes it: ``&``, ``<`` and ``>``, nothing else."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


# --- reading -------------------------------------------------------------------------------------

def event_of(cls: type, element):
    """Build an event of ``cls`` from its element; errors say which line and element."""
    values: dict[str, object] = {}
    found: dict[str, object] = {}
    pending = [(tag, child) for child in element if isinstance(tag := child.tag, str)]  # no comments or PIs
    position, count = 0, len(pending)
    for name, tag, required, element_name, read in _event_reading(cls):
        if position < count and pending[position][0] == tag:
            child = pending[position][1]
            position += 1
            found[name] = child
            try:
                if read is _read_mark:
                    values[name] = _read_mark(child)
                elif len(child):
                    raise ModelError(f"{element_name} holds text, not elements")
                elif read is None:  # a string: taken as it is
                    values[name] = child.text or ""
                else:
                    values[name] = read(child.text or "")
            except ModelError as error:
                raise ModelError(f"{_where(child)}: {error}", field=name) from None
        elif required:
            raise ModelError(f"{_where(element)}: {element_name} is missing")
    if position < count:
        raise ModelError(f"{_where(pending[position][1])}: unexpected element {local_name(pending[position][1])}")
    try:
        return cls(**values)
    except ModelError as error:
        raise ModelError(f"{_where(found.get(error.field, element))}: {error}", field=error.field) from None


@cache
def _event_reading(cls: type) -> tuple[tuple[str, str, bool, str, Callable[[object], object] | None], ...]:
    """Per field: name, qualified tag, required, element name, and how to read it (None: a string as it is)."""
    return tuple((spec.name, NAMESPACE_PREFIX + spec.element, spec.required, spec.element,
                  _read_mark if spec.kind is Mark else None if spec.kind is str else text_reader(spec.kind))
                 for spec in field_specs(cls))


def children(element) -> list:
    """Child elements, skipping comments and processing instructions."""
    return [child for child in element if isinstance(child.tag, str)]


def local_name(element) -> str:
    return element.tag.rpartition("}")[2]


def expect_namespace(element) -> None:
    if not element.tag.startswith(NAMESPACE_PREFIX):
        raise ModelError(f"{_where(element)}: {local_name(element)} must be in namespace {NAMESPACE}")


def _read_mark(element) -> Mark:
    inner = children(element)
    scale = _MARK_SCALES.get(local_name(inner[0])) if len(inner) == 1 else None
    if scale is None:
        raise ModelError(f"Mark holds exactly one of {', '.join(_MARK_SCALES)}")
    return Mark(scale, inner[0].text or "")


def _where(element) -> str:
    """Line (when the parser kept it) and a path of local names up to the event's root."""
    line = getattr(element, "sourceline", None)
    steps = []
    node = element
    while node is not None:
        steps.append(local_name(node))
        node = node.getparent() if hasattr(node, "getparent") else None
    path = "/" + "/".join(reversed(steps))
    return f"line {line}, {path}" if line else path
