"""The SMEV 3 XMLDSig transform ``urn://smev-gov-ru/xmldsig/transform``.

SMEV signs a ``Reference`` through two transforms, exc-c14n and then this one.
Applied to the exc-c14n output, it writes every element with a generated prefix
(``ns1``, ``ns2``… in document order, a counter that never goes back), declares
a namespace only where it is used and not already in scope in the output, sorts
attributes and drops everything that carries no data: declaration, processing
instructions, comments, whitespace-only text, empty-element tags. The digest is
taken over the bytes this module returns, so they must equal, byte for byte,
what the Java reference client writes for that chain, escaping included.

Faithful means also faithful to its flaws: an ``xml:lang`` attribute comes out
with its namespace bound to a generated prefix, which Namespaces in XML forbids,
so such output does not parse back; tab, CR and LF in attribute values come out
raw and read back as spaces. Keep both out of signed content ejx generates.

exc-c14n needs no separate pass here: lxml already holds what it would keep
(resolved namespace URIs, expanded character references, CDATA as text), and
this transform re-derives every declaration from the URIs it sees, ignoring the
declarations of the source document and its ancestors.
"""

from __future__ import annotations

from lxml import etree

from broker.domain.faults import InvalidContent
from broker.xml import hardened

__all__ = ["TRANSFORM_URI", "transform", "transform_bytes"]

TRANSFORM_URI = "urn://smev-gov-ru/xmldsig/transform"

_WHITESPACE = " \t\n\r"  # Java's String.trim() drops chars <= U+0020; XML 1.0 allows only these four
_EVENTS = ("start", "end", "comment", "pi")

def transform_bytes(data: bytes) -> bytes:
    """Parse a whole document and :func:`transform` its root element (``ejx smev3 transform``).

    The trusted variant of the one parser, since the rules must see and drop the
    declaration and PIs the hostile-input scans refuse; nothing is resolved and a
    DOCTYPE is refused, so no entity is ever expanded.
    """
    try:
        root = hardened.parse_trusted(data)
    except etree.XMLSyntaxError as error:
        raise InvalidContent(f"not well-formed XML: {error}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise InvalidContent("DOCTYPE is not accepted in signed content")
    return transform(root)


def transform(element: etree._Element) -> bytes:
    """The UTF-8 bytes of exc-c14n followed by the SMEV transform of ``element``.

    ``element`` may sit anywhere in its document (it is usually the one a
    ``Reference URI="#Id"`` names): only its subtree is written, and namespaces
    declared on its ancestors count through the URIs lxml resolved with them.
    The walk is iterative (lxml's ``iterwalk``), so depth costs no Python stack.
    """
    out: list[str] = []
    scope: dict[str, str] = {}  # namespace URI -> output prefix, for the open elements
    opened: list[tuple[str, list[str] | None]] = []  # (closing tag, URIs it declared)
    counter = 0
    text = None  # character data since the last tag, merged across dropped comments and PIs
    for event, node in etree.iterwalk(element, events=_EVENTS):
        if event == "start":
            if text and text.strip(_WHITESPACE):
                out.append(_escape_text(text))
            tag = node.tag
            if not isinstance(tag, str):  # an unexpanded entity: exc-c14n refuses it too
                raise InvalidContent(f"entity reference {node} is not accepted", details={"line": node.sourceline})
            uri, _, local = tag.rpartition("}")  # uri keeps its leading "{"
            if not uri:
                raise _no_namespace(node)
            prefix = scope.get(uri)
            declared = None
            if prefix is None:
                counter += 1
                prefix = scope[uri] = f"ns{counter}"
                declared = [uri]
            qname = f"{prefix}:{local}"
            out.append(f'<{qname} xmlns:{prefix}="{_escape_attribute(uri[1:])}"' if declared else f"<{qname}")
            attributes = node.items()
            if attributes:
                if len(attributes) > 1:
                    attributes.sort(key=_attribute_order)
                values: list[str] = []
                for name, value in attributes:
                    uri, _, local = name.rpartition("}")
                    if uri:
                        prefix = scope.get(uri)
                        if prefix is None:
                            counter += 1
                            prefix = scope[uri] = f"ns{counter}"
                            if declared is None:
                                declared = []
                            declared.append(uri)
                            out.append(f' xmlns:{prefix}="{_escape_attribute(uri[1:])}"')
                        name = f"{prefix}:{local}"
                    values.append(f' {name}="{_escape_attribute(value)}"')
                out += values
            out.append(">")
            opened.append((f"</{qname}>", declared))
            text = node.text
        elif event == "end":
            if text and text.strip(_WHITESPACE):
                out.append(_escape_text(text))
            closing, declared = opened.pop()
            out.append(closing)
            if declared:
                for uri in declared:
                    del scope[uri]
            text = node.tail  # never written for the signed element: its end is the last event
        elif node.tail:  # a comment or PI left in the tree: dropped, its tail joins the text around it
            text = (text or "") + node.tail
    return "".join(out).encode("utf-8")


def _attribute_order(item: tuple[str, str]) -> tuple[bool, str, str]:
    """Namespace URI, then local name; unqualified attributes after all qualified ones."""
    uri, _, local = item[0].rpartition("}")
    return not uri, uri, local


def _escape_text(text: str) -> str:
    """Escape character data as the Java reference does: ``&``, ``<`` and also ``>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attribute(value: str) -> str:
    """As text, plus ``"``; tab, LF and CR stay raw (vector 07), unlike exc-c14n's ``&#x9;``."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _no_namespace(node: etree._Element) -> InvalidContent:
    """SMEV's transform has no output form for an element outside every namespace."""
    return InvalidContent(f"element <{node.tag}> has no namespace: the SMEV transform refuses it",
                          details={"line": node.sourceline})
