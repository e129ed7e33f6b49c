"""Events as JSON-ready dicts for the REST API.

Keys are the snake_case field names plus ``type``; values are strings in the
XSD's lexical forms, except ``version`` and ``minutes_late`` (numbers),
``counts_in_average`` (boolean) and ``mark`` (``{"scale": ..., "value": ...}``).
Optional fields that are unset are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import cache

from broker.domain.model.errors import ModelError, UnknownEventType
from broker.domain.model.events import EVENT_TYPES, Event
from broker.domain.model.fields import field_specs, text_reader, text_writer, to_text
from broker.domain.model.marks import Mark, MarkScale


def event_to_dict(event: Event) -> dict[str, object]:
    """The event as a dict that ``json.dumps`` takes as is."""
    type_name, fields = _dict_writing(type(event))
    data: dict[str, object] = {"type": type_name}
    for name, kind, value_of in fields:
        value = getattr(event, name)
        if value is None:
            continue
        data[name] = value_of(value) if type(value) is kind else _any_value(value)
    return data


def event_from_dict(data: Mapping[str, object]) -> Event:
    """Build an event from a decoded JSON object; strict about keys and JSON types.

    A value already of its field's kind is taken as it is (and still checked by the model): JSON
    decodes to no UUID or datetime, so that is only ejx's own ``event_id`` and ``recorded_at``, which
    would otherwise be written as text only to be read back."""
    if not isinstance(data, Mapping):
        raise ModelError(f"an event is a JSON object, not {type(data).__name__}")
    name = data.get("type")
    if not isinstance(name, str) or name not in EVENT_TYPES:
        raise UnknownEventType(f"type {name!r} is not an event type (known: {', '.join(EVENT_TYPES)})")
    cls = EVENT_TYPES[name]  # type: ignore[index]
    keys, fields = _dict_reading(cls)
    if not keys.issuperset(data):
        unknown = set(data) - keys
        raise ModelError(f"unknown fields for {name}: {', '.join(sorted(unknown))}")
    values = {}
    for field, required, read, kind in fields:
        value = data.get(field)
        if type(value) is kind:  # e.g. a string for a string field: nothing to read
            values[field] = value
            continue
        if value is None:
            if required:
                raise ModelError(f"{field} is missing", field=field)
            continue
        try:
            values[field] = read(value)
        except ModelError as error:
            raise ModelError(f"{field}: {error}", field=field) from None
    return cls(**values)


# --- the plans, made once per event type -----------------------------------------------------------

_Reader = Callable[[object], object]
"""Reads one JSON value of a field, or raises ``ModelError``."""


@cache
def _dict_writing(cls: type[Event]) -> tuple[str, tuple[tuple[str, type, Callable[[object], object]], ...]]:
    """The type name, and per field: name, kind, and its JSON value for a value of exactly that kind."""
    return cls.type.value, tuple((spec.name, spec.kind, _value_writer(spec.kind)) for spec in field_specs(cls))


def _value_writer(kind: type) -> Callable[[object], object]:
    if kind is Mark:
        return _mark_value  # type: ignore[return-value]
    if kind in (int, bool):
        return _same
    return text_writer(kind)


def _any_value(value: object) -> object:
    """The JSON value of a value of any type."""
    if isinstance(value, Mark):
        return _mark_value(value)
    if type(value) in (int, bool):
        return value
    return to_text(value)


def _mark_value(mark: Mark) -> dict[str, object]:
    return {"scale": mark.scale.value, "value": mark.value}


def _same(value: object) -> object:
    return value


@cache
def _dict_reading(cls: type[Event]) -> tuple[frozenset[str], tuple[tuple[str, bool, _Reader, type], ...]]:
    """The keys an event type admits, and per field: name, required, how to read its JSON value, its kind."""
    specs = field_specs(cls)
    keys = frozenset({"type"} | {spec.name for spec in specs})
    return keys, tuple((spec.name, spec.required, _value_reader(spec.kind), spec.kind) for spec in specs)


def _value_reader(kind: type) -> _Reader:
    """Read one JSON value of a field of ``kind``, or raise ``ModelError``."""
    if kind is Mark:
        return _read_mark
    if kind is str:
        return _read_string
    if kind in (int, bool):
        expected = f"must be a JSON {'boolean' if kind is bool else 'integer'}"

        def read_exact(value: object) -> object:
            if type(value) is not kind:
                raise ModelError(expected)
            return value
        return read_exact
    from_text = text_reader(kind)
    numbers_too = kind is Decimal

    def read_text(value: object) -> object:
        if type(value) is str:
            return from_text(value)
        if numbers_too and type(value) in (int, float):
            return Decimal(str(value))
        if not isinstance(value, str):
            raise ModelError(f"must be a JSON string, not {type(value).__name__}")
        return from_text(value)
    return read_text


def _read_string(value: object) -> str:
    if not isinstance(value, str):
        raise ModelError(f"must be a JSON string, not {type(value).__name__}")
    return value


_SCALES = {scale.value: scale for scale in MarkScale}
"""Scales by their JSON name."""


def _read_mark(value: object) -> Mark:
    if not isinstance(value, Mapping) or set(value) != {"scale", "value"}:
        raise ModelError('a mark is {"scale": ..., "value": ...}')
    scale, mark = value["scale"], value["value"]
    if not isinstance(scale, str) or scale not in _SCALES:
        raise ModelError(f"scale {scale!r} is not one of {', '.join(MarkScale)}")
    if type(mark) is int:  # {"scale": "five-point", "value": 5} is what vendors will send
        mark = str(mark)
    if not isinstance(mark, str):
        raise ModelError("a mark value is a string")
    return Mark(_SCALES[scale], mark)
