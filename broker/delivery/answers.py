"""What a receiver's HTTP answer means: delivered, or which fault — and the XML form of a fault.

Receivers (the portal, the reference receivers) answer a refusal with a fault
code in the body, as JSON ``{"code", "description"}`` or XML of
``urn://ejx/fault/1`` (schemas/fault.xsd); the status alone decides only when
the body names nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from lxml import etree

from broker.domain.faults import (
    DestinationOverflow,
    Failure,
    Fault,
    InvalidContent,
    fault_from_code,
)
from broker.xml import hardened

FAULT_NS = "urn://ejx/fault/1"


def answer_fault(status: int, content_type: str, body: bytes) -> Fault:
    """The fault a receiver's non-2xx answer stands for.

    The fault code in the body (JSON ``{"code", "description"}`` or an XML
    ``urn://ejx/fault/1`` Fault) names it; 5xx is retriable whatever the body
    says. A 4xx without a readable code refuses the message for good only where
    the status is about the content (400, 415, 422); the others — credentials
    (401, 403), a wrong address (404), a proxy's limits (413, 431) — are about
    the connection, not this message, and are retried like an outage.
    """
    code, description = _read_fault(content_type, body)
    if status >= 500:
        return Failure(f"HTTP {status}: {code or ''} {description or ''}".strip())
    if code:
        return fault_from_code(code, description or f"HTTP {status}")
    if status in (408, 429):
        return DestinationOverflow(f"HTTP {status}")
    if status in _REFUSES_THE_CONTENT:
        return InvalidContent(f"receiver refused the message: HTTP {status}")
    if status in (401, 403):
        return Failure(f"HTTP {status}: the receiver refused ejx's credentials (check its certificate or token)")
    return Failure(f"HTTP {status} without a fault code: not a verdict on the message; retried")


_REFUSES_THE_CONTENT = frozenset({400, 415, 422})


def _read_fault(content_type: str, body: bytes) -> tuple[str | None, str | None]:
    if not body:
        return None, None
    if "json" in content_type:
        try:  # orjson refuses nesting past 1,024 levels with a ValueError: the stdlib's would recurse
            data = orjson.loads(body)
        except ValueError:
            return None, None
        if isinstance(data, Mapping) and isinstance(data.get("code"), str):
            return data["code"], str(data.get("description") or "")
        return None, None
    if "xml" in content_type:
        try:
            root = hardened.parse(body)
        except InvalidContent:
            return None, None
        if root.tag == f"{{{FAULT_NS}}}Fault":
            return (root.findtext(f"{{{FAULT_NS}}}Code"), root.findtext(f"{{{FAULT_NS}}}Description"))
    return None, None


def fault_xml(fault: Fault) -> bytes:
    """The XML form of a fault (schemas/fault.xsd), for SMEV-style callers."""
    root = etree.Element(f"{{{FAULT_NS}}}Fault", nsmap={None: FAULT_NS})
    etree.SubElement(root, f"{{{FAULT_NS}}}Code").text = fault.code
    etree.SubElement(root, f"{{{FAULT_NS}}}Description").text = fault.description[:4000] or fault.code
    etree.SubElement(root, f"{{{FAULT_NS}}}Retriable").text = "true" if fault.retriable else "false"
    return hardened.to_bytes(root)


