"""Vendor payloads: untrusted request bodies turned into a list of raw events, or a fault.

Every check here happens before anything is built from the bytes that could
cost more than the bytes themselves: size, encoding, nesting depth, number
length, duplicate keys. XML goes through :func:`broker.xml.hardened.parse`, the one
hardened parser.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum

from lxml import etree

from broker.domain.faults import InvalidContent
from broker.xml import hardened

EVENTS_NS = "urn://ejx/events/1"
EVENT_BATCH = f"{{{EVENTS_NS}}}EventBatch"



class ContentTooLarge(InvalidContent):
    """The body is over the size limit or holds more events than one request may."""

    http_status = 413


class UnsupportedContentType(InvalidContent):
    """The body is neither JSON nor XML."""

    http_status = 415


class PayloadFormat(StrEnum):
    JSON = "json"
    XML = "xml"


@dataclass(frozen=True)
class PayloadLimits:
    """Bounds on one request body; the defaults fit 1,000 events with long comments."""

    max_bytes: int = 4 * 1024 * 1024
    """Body size, checked against Content-Length and again while reading."""
    max_events: int = 1000
    """Events in one request."""
    max_json_depth: int = 8
    """Deepest JSON nesting; an event needs 3 (list → event → mark)."""
    max_number_chars: int = 32
    """Longest JSON number literal; nothing in an event needs more."""


def payload_format(content_type: str | None) -> PayloadFormat:
    """JSON or XML from a Content-Type header; anything else is UnsupportedContentType."""
    media, _, params = (content_type or "").partition(";")
    media = media.strip().lower()
    charset = _charset(params)
    if charset not in (None, "utf-8", "utf8"):
        raise UnsupportedContentType(f"charset {charset!r} is not accepted; send UTF-8")
    if media == "application/json":
        return PayloadFormat.JSON
    if media in ("application/xml", "text/xml"):
        return PayloadFormat.XML
    raise UnsupportedContentType(f"content type {media or '(none)'!r} is not accepted; "
                                 "send application/json or application/xml")


def check_declared_size(content_length: str | None, limits: PayloadLimits) -> None:
    """Refuse early on the header; the body is still counted as it arrives (the header may lie)."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise InvalidContent(f"Content-Length {content_length!r} is not a number") from None
    if declared > limits.max_bytes:
        raise ContentTooLarge(f"body of {declared} bytes is over the limit of {limits.max_bytes}",
                              details={"limit_bytes": limits.max_bytes})


def over_size(received: int, limits: PayloadLimits) -> ContentTooLarge:
    return ContentTooLarge(f"body is over the limit of {limits.max_bytes} bytes",
                           details={"limit_bytes": limits.max_bytes, "received_at_least": received})


def json_events(body: bytes, limits: PayloadLimits = PayloadLimits()) -> list[object]:
    """One JSON event or a list of them, parsed without trusting the body.

    Items are returned as parsed (not necessarily objects): the caller reports
    each bad item with its index.
    """
    document = json_document(body, limits)
    return counted(document if isinstance(document, list) else [document], limits)


def json_document(body: bytes, limits: PayloadLimits = PayloadLimits()) -> object:
    """Any JSON document within the limits (size, UTF-8, depth, number length, unique keys)."""
    if len(body) > limits.max_bytes:
        raise over_size(len(body), limits)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidContent(f"body is not valid UTF-8 at byte {error.start}",
                             details={"byte": error.start}) from None
    text = text.removeprefix("\ufeff")
    try:
        document = json.loads(text, parse_int=_bounded_int(limits), parse_float=_bounded_float(limits),
                              parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise InvalidContent(f"body is not JSON: {error.msg} at line {error.lineno} column {error.colno}",
                             details={"line": error.lineno, "column": error.colno}) from None
    except RecursionError:  # json's C scanner counts its own recursion: a clean error, not a crash
        raise _too_deep(limits) from None
    except ValueError as error:  # raised by the hooks below
        raise InvalidContent(f"body is not acceptable JSON: {error}") from None
    _check_json_depth(document, limits)
    if _SURROGATE_ESCAPE.search(text):
        _check_no_lone_surrogate(document, "")
    return document


def xml_events(body: bytes, limits: PayloadLimits = PayloadLimits()) -> list[etree._Element]:
    """One event element or the children of an EventBatch, parsed by the hardened parser."""
    if len(body) > limits.max_bytes:
        raise over_size(len(body), limits)
    root = hardened.parse(body, limits=hardened.XmlLimits(max_bytes=limits.max_bytes,
                                                        max_elements=max(50_000, limits.max_events * 60)))
    if root.tag == EVENT_BATCH:
        return counted([child for child in root if isinstance(child.tag, str)], limits)
    return [root]


def counted(items: list, limits: PayloadLimits) -> list:
    """``items`` if there are some and no more than one request may carry."""
    if not items:
        raise InvalidContent("the request holds no events")
    if len(items) > limits.max_events:
        raise ContentTooLarge(f"{len(items)} events in one request; at most {limits.max_events}",
                              details={"limit_events": limits.max_events, "events": len(items)})
    return items


def _check_json_depth(document: object, limits: PayloadLimits) -> None:
    """Refuse structures deeper than any event needs (json itself stops near 1,000 levels)."""
    # Only containers are kept level by level (json.loads makes plain dicts and lists): a scalar adds no depth.
    level = [document] if type(document) in _CONTAINERS else []
    for _ in range(limits.max_json_depth):
        level = [child for node in level for child in (node.values() if type(node) is dict else node)
                 if type(child) in _CONTAINERS]
        if not level:
            return
    raise _too_deep(limits)


_CONTAINERS = frozenset({dict, list})


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""How a surrogate is written in JSON; json joins a pair into one character and keeps a lone one as is."""
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_no_lone_surrogate(node: object, path: str) -> None:
    """UTF-8 has no lone surrogate: refused here, with its path, instead of crashing the first encoder it meets
    (the event id, the answer, the log). Recursion is bounded by the depth check that ran first."""
    pairs = node.items() if type(node) is dict else enumerate(node) if type(node) is list else ()
    for key, value in pairs:
        if type(key) is str and _SURROGATE.search(key):  # the key is not quoted: it cannot be encoded either
            raise _lone_surrogate(f"a key of the object at {path or '/'}", path or "/")
        where = f"{path}/{key}"
        if type(value) is str and _SURROGATE.search(value):
            raise _lone_surrogate(f"the string at {where}", where)
        _check_no_lone_surrogate(value, where)


def _lone_surrogate(what: str, path: str) -> InvalidContent:
    return InvalidContent(f"{what} holds a lone surrogate (\\ud800-\\udfff), which UTF-8 cannot carry",
                          details={"path": path})


def _too_deep(limits: PayloadLimits) -> InvalidContent:
    return InvalidContent(f"JSON is nested deeper than {limits.max_json_depth} levels",
                          details={"limit_depth": limits.max_json_depth})


def _bounded_int(limits: PayloadLimits):  # noqa: ANN202
    def parse(literal: str) -> int:
        if len(literal) > limits.max_number_chars:
            raise ValueError(f"number of {len(literal)} digits is too long")
        return int(literal)
    return parse


def _bounded_float(limits: PayloadLimits):  # noqa: ANN202
    def parse(literal: str) -> float:
        if len(literal) > limits.max_number_chars:
            raise ValueError(f"number of {len(literal)} characters is too long")
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"number {literal} is out of range")
        return value
    return parse


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """Duplicate keys are ambiguous (which one wins differs between parsers): refuse them."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key!r} appears twice in one object")
            seen.add(key)
    return result


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None
