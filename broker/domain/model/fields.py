"""How event fields look on the wire: names, and values as text.

Both XML and JSON forms are derived from the dataclass fields, in declaration
order, so adding a field to an event type changes one place.

The forms run once per event on the ingest path, so the choice of what to do
for a kind is made once per kind, not once per value: :func:`text_writer` is
:func:`to_text` for values of exactly that kind, :func:`text_reader` is
:func:`from_text` with the kind fixed.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import get_args, get_type_hints

from broker.domain.model.errors import ModelError

_LEXICAL: dict[type, re.Pattern[str]] = {
    uuid.UUID: re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
    datetime: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"),
    date: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    int: re.compile(r"[+-]?[0-9]{1,19}"),
    Decimal: re.compile(r"[+-]?([0-9]{1,20}(\.[0-9]{0,20})?|\.[0-9]{1,20})"),
    bool: re.compile(r"true|false"),
}
"""The XSD lexical forms we accept; Python's own parsers accept more (1_000, NaN, 20261005)."""

_BLANK = " \t\r\n"
"""What XSD collapses around every non-string value."""


@dataclass(frozen=True)
class FieldSpec:
    """One field of an event type as the wire forms see it."""

    name: str
    """snake_case name: the attribute and the JSON key."""
    kind: type
    """The annotated type without ``| None``."""
    required: bool
    """False when the field may be left out (``| None`` or a default)."""
    element: str
    """CamelCase name of the XML element."""


@cache
def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The fields of an event type, in the order the XSD sequence has them."""
    hints = get_type_hints(cls)
    specs = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        optional = type(None) in get_args(hint)  # "X | None"
        kind = next(arg for arg in get_args(hint) if arg is not type(None)) if optional else hint
        has_default = field.default is not dataclasses.MISSING
        element = "".join(part.capitalize() for part in field.name.split("_"))
        specs.append(FieldSpec(field.name, kind, not (optional or has_default), element))
    return tuple(specs)


def to_text(value: object) -> str:
    """The canonical lexical form of a scalar value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


_WRITERS: dict[type, Callable[[object], str]] = {
    bool: {True: "true", False: "false"}.__getitem__,
    datetime: datetime.isoformat,
    date: date.isoformat,
    Decimal: _decimal_text,  # type: ignore[dict-item]
    uuid.UUID: str,
    int: str,
    str: str,
}


@cache
def text_writer(kind: type) -> Callable[[object], str]:
    """``to_text`` for a value whose type is exactly ``kind`` (callers check; others take ``to_text``)."""
    if kind in _WRITERS:
        return _WRITERS[kind]
    if issubclass(kind, Enum):
        return {member: str(member.value) for member in kind}.__getitem__
    return to_text


def from_text(kind: type, text: str) -> object:
    """Read a scalar of ``kind`` from its lexical form, or raise ``ModelError``."""
    return text_reader(kind)(text)


@cache
def text_reader(kind: type) -> Callable[[str], object]:
    """``from_text`` with ``kind`` fixed: read one lexical form, or raise ``ModelError``."""
    if kind is str:
        return _same_text
    if issubclass(kind, Enum):
        return _enum_reader(kind)
    return _lexical_reader(kind)


def _same_text(text: str) -> str:
    return text


def _enum_reader(kind: type[Enum]) -> Callable[[str], object]:
    def read(text: str) -> object:
        try:
            return kind(text)
        except ValueError:
            raise ModelError(f"{text!r} is not one of {', '.join(str(m.value) for m in kind)}") from None
    return read


def _lexical_reader(kind: type) -> Callable[[str], object]:
    fullmatch = _LEXICAL[kind].fullmatch
    parse: Callable[[str], object] = {
        bool: "true".__eq__, datetime: datetime.fromisoformat, date: date.fromisoformat,
    }.get(kind, kind)

    def read(text: str) -> object:
        text = text.strip(_BLANK)  # XSD collapses whitespace around every non-string value
        if not fullmatch(text):
            raise ModelError(f"{text!r} is not a valid {kind.__name__}")
        try:
            return parse(text)
        except ValueError as error:
            raise ModelError(f"{text!r} is not a valid {kind.__name__}: {error}") from None
    return read
