"""Events as JSON-ready dicts for the REST API.

Keys are the snake_case field names plus ``type``; values are strings in the
XSD's lexical forms, except ``version`` and ``minutes_late`` (numbers),
``counts_in_average`` (boolean) and ``mark`` (``{"scale": ..., "value": ...}``).
Optional fields that are unset are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from broker.model.errors import ModelError, UnknownEventType
from broker.model.events import EVENT_TYPES, Event
from broker.model.fields import FieldSpec, field_specs, from_text, to_text
from broker.model.marks import Mark, MarkScale


def event_to_dict(event: Event) -> dict[str, object]:
    """The event as a dict that ``json.dumps`` takes as is."""
    data: dict[str, object] = {"type": event.type.value}
    for spec in field_specs(type(event)):
        value = getattr(event, spec.name)
        if value is None:
            continue
        if isinstance(value, Mark):
            data[spec.name] = {"scale": value.scale.value, "value": value.value}
        elif type(value) in (int, bool):
            data[spec.name] = value
        else:
            data[spec.name] = to_text(value)
    return data


def event_from_dict(data: Mapping[str, object]) -> Event:
    """Build an event from a decoded JSON object; strict about keys and JSON types."""
    if not isinstance(data, Mapping):
        raise ModelError(f"an event is a JSON object, not {type(data).__name__}")
    name = data.get("type")
    if name not in EVENT_TYPES:
        raise UnknownEventType(f"type {name!r} is not an event type (known: {', '.join(EVENT_TYPES)})")
    cls = EVENT_TYPES[name]  # type: ignore[index]
    specs = field_specs(cls)
    unknown = set(data) - {"type"} - {spec.name for spec in specs}
    if unknown:
        raise ModelError(f"unknown fields for {name}: {', '.join(sorted(unknown))}")
    values = {}
    for spec in specs:
        if data.get(spec.name) is None:
            if spec.required:
                raise ModelError(f"{spec.name} is missing", field=spec.name)
            continue
        try:
            values[spec.name] = _read(spec, data[spec.name])
        except ModelError as error:
            raise ModelError(f"{spec.name}: {error}", field=spec.name) from None
    return cls(**values)


def _read(spec: FieldSpec, value: object) -> object:
    if spec.kind is Mark:
        return _read_mark(value)
    if spec.kind in (int, bool):
        if type(value) is not spec.kind:
            raise ModelError(f"must be a JSON {'boolean' if spec.kind is bool else 'integer'}")
        return value
    if spec.kind is Decimal and type(value) in (int, float):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise ModelError(f"must be a JSON string, not {type(value).__name__}")
    return from_text(spec.kind, value)


def _read_mark(value: object) -> Mark:
    if not isinstance(value, Mapping) or set(value) != {"scale", "value"}:
        raise ModelError('a mark is {"scale": ..., "value": ...}')
    scale, mark = value["scale"], value["value"]
    if scale not in set(MarkScale):
        raise ModelError(f"scale {scale!r} is not one of {', '.join(MarkScale)}")
    if type(mark) is int:  # {"scale": "five-point", "value": 5} is what vendors will send
        mark = str(mark)
    if not isinstance(mark, str):
        raise ModelError("a mark value is a string")
    return Mark(MarkScale(scale), mark)
