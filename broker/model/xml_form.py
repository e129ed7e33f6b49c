"""Events as XML of ``urn://ejx/events/1``, with the standard library only.

Writing builds ``xml.etree.ElementTree`` elements; reading takes any parsed
element with the ElementTree API (lxml's included), so the model never parses
bytes: untrusted bytes go through :func:`broker.xmlsafe.parse` first.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from broker.model.errors import ModelError
from broker.model.fields import FieldSpec, field_specs, from_text, to_text
from broker.model.marks import Mark, MarkScale

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


def event_element(event) -> ET.Element:
    """The event as an element tree, children in the XSD's order."""
    root = ET.Element(_qualified(type(event).__name__))
    for spec in field_specs(type(event)):
        value = getattr(event, spec.name)
        if value is None:
            continue
        child = ET.SubElement(root, _qualified(spec.element))
        if isinstance(value, Mark):
            ET.SubElement(child, _qualified(MARK_ELEMENTS[value.scale])).text = value.value
        else:
            child.text = to_text(value)
    return root


def batch_element(events: list[ET.Element]) -> ET.Element:
    root = ET.Element(_qualified("EventBatch"))
    root.extend(events)
    return root


def to_bytes(root: ET.Element) -> bytes:
    """UTF-8 with a declaration, our namespace as the default one."""
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True, default_namespace=NAMESPACE)


def event_of(cls: type, element):
    """Build an event of ``cls`` from its element; errors say which line and element."""
    values: dict[str, object] = {}
    found: dict[str, object] = {}
    pending = children(element)
    for spec in field_specs(cls):
        if pending and pending[0].tag == NAMESPACE_PREFIX + spec.element:
            child = pending.pop(0)
            found[spec.name] = child
            values[spec.name] = _read(spec, child)
        elif spec.required:
            raise ModelError(f"{_where(element)}: {spec.element} is missing")
    if pending:
        raise ModelError(f"{_where(pending[0])}: unexpected element {local_name(pending[0])}")
    try:
        return cls(**values)
    except ModelError as error:
        raise ModelError(f"{_where(found.get(error.field, element))}: {error}", field=error.field) from None


def children(element) -> list:
    """Child elements, skipping comments and processing instructions."""
    return [child for child in element if isinstance(child.tag, str)]


def local_name(element) -> str:
    return element.tag.rpartition("}")[2]


def expect_namespace(element) -> None:
    if not element.tag.startswith(NAMESPACE_PREFIX):
        raise ModelError(f"{_where(element)}: {local_name(element)} must be in namespace {NAMESPACE}")


def _read(spec: FieldSpec, child) -> object:
    try:
        if spec.kind is Mark:
            return _read_mark(child)
        if len(child):
            raise ModelError(f"{spec.element} holds text, not elements")
        return from_text(spec.kind, child.text or "")
    except ModelError as error:
        raise ModelError(f"{_where(child)}: {error}", field=spec.name) from None


def _read_mark(element) -> Mark:
    inner = children(element)
    if len(inner) != 1 or local_name(inner[0]) not in _MARK_SCALES:
        raise ModelError(f"Mark holds exactly one of {', '.join(_MARK_SCALES)}")
    return Mark(_MARK_SCALES[local_name(inner[0])], inner[0].text or "")


def _qualified(name: str) -> str:
    return NAMESPACE_PREFIX + name


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
