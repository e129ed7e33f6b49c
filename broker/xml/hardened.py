"""The one hardened XML parser: every entry point that reads XML bytes calls :func:`parse`.

Bytes ejx wrote itself or ships (its XSDs, a signature template, an event it
just serialised) go through :func:`parse_trusted` instead: the same parser
and flags, without the hostile-input checks. No other module builds a parser.

Hostile input is refused by a byte scan before libxml2 sees it where a scan
can tell: size, encoding, any DOCTYPE (so no DTD and no entity declarations at
all) and an upper bound on the element count, which bounds the tree before it
is built. What only the tree can tell (depth, attributes per element, text and
attribute sizes, processing instructions, XInclude) is checked on that bounded
tree, each in time linear in the document: counts come before any look at
values, and lxml's per-element attribute access, quadratic in the number of
attributes, is never used (200,000 attributes took minutes). libxml2 runs with
DTD loading, entity substitution and network access off, and keeps its own
depth (256) and text-node limits, as a second line of defence.

Only UTF-8 is accepted: SMEV-style exchanges are UTF-8, signatures are
computed over UTF-8, and a single ASCII-compatible encoding keeps the byte
scans sound (UTF-16 or EBCDIC could hide a ``<!DOCTYPE`` from them).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from lxml import etree

from broker.domain.faults import InvalidContent

_XINCLUDE = ("{http://www.w3.org/2001/XInclude}", "{http://www.w3.org/2003/XInclude}")

_DECLARATION = re.compile(rb"<\?xml[ \t\r\n][^>]{0,200}?\?>")
_DECLARATION_STARTS = (b"<?xml ", b"<?xml\t", b"<?xml\r", b"<?xml\n")
_PSEUDO_ATTRIBUTE = re.compile(rb"""(version|encoding|standalone)\s*=\s*["']([^"']*)["']""")
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"
_local = threading.local()


@dataclass(frozen=True)
class XmlLimits:
    """Bounds on one document; the defaults fit any single event and a large EventBatch."""

    max_bytes: int = 1_048_576
    """Size of the raw document, checked before parsing."""
    max_depth: int = 64
    """Deepest element nesting; the root is depth 1."""
    max_elements: int = 50_000
    """Elements in the whole document."""
    max_attributes: int = 64
    """Attributes on one element (namespace declarations are not attributes); events use one or two."""
    max_text: int = 65_536
    """Longest text node or attribute value, in characters."""
    max_namespace_declarations: int = 4_096
    """``xmlns`` declarations in the whole document (each event of a batch may redeclare its own);
    100,000 of them made schema validation of one 2 MB batch take minutes."""


def parse(data: bytes, *, limits: XmlLimits = XmlLimits()) -> etree._Element:
    """Parse one untrusted document into its root element, or raise ``InvalidContent``."""
    if not isinstance(data, bytes):
        raise TypeError(f"parse() takes bytes, not {type(data).__name__}")
    scanned = _check_bytes(data, limits)
    parser = _thread_parser()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        raise _malformed(parser, error) from None
    _check_tree(root, data, limits, scanned)
    return root


def parse_trusted(data: bytes, *, base_url: str | None = None) -> etree._Element:
    """Parse bytes ejx produced or ships, with the parser of :func:`parse` but without its checks.

    Nothing is resolved here either (no DTD, no entities, no network); only the
    scans for hostile input are skipped. ``base_url`` lets a schema find the
    schemas it imports. Malformed bytes are a bug in ejx, not a sender's fault,
    so they raise lxml's ``XMLSyntaxError``, not ``InvalidContent``.
    """
    if not isinstance(data, bytes):
        raise TypeError(f"parse_trusted() takes bytes, not {type(data).__name__}")
    return etree.fromstring(data, _thread_parser(), base_url=base_url)


def to_bytes(element: etree._Element) -> bytes:
    """Serialise an element as a standalone UTF-8 document with an XML declaration."""
    return etree.tostring(element, encoding="UTF-8", xml_declaration=True)


def location(element: etree._Element) -> str:
    """An XPath-like path of local names, e.g. ``/GradePosted/Mark/FivePoint``."""
    steps = []
    node: etree._Element | None = element
    while node is not None:
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = [sibling for sibling in parent if sibling.tag == node.tag]
            if len(same) > 1:
                name = f"{name}[{same.index(node) + 1}]"
        steps.append(name)
        node = parent
    return "/" + "/".join(reversed(steps))


def _thread_parser() -> etree.XMLParser:
    """This thread's parser, the only one in ejx: lxml parsers serialise concurrent use behind a lock."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            encoding="utf-8",  # never guess: the declaration was checked already
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            attribute_defaults=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=False,  # kept so that they can be refused
            collect_ids=False,
        )
    return parser


@dataclass(frozen=True)
class _Scanned:
    """What the byte scan found that the tree checks use again."""

    start_tags: int
    """An upper bound on the elements (and so on the nesting depth)."""
    declaration_marks: int
    """The "?" of the XML declaration, if there is one: any other "?" could belong to a PI."""


def _check_bytes(data: bytes, limits: XmlLimits) -> _Scanned:
    """Refuse by byte scan what must never reach the parser."""
    if len(data) > limits.max_bytes:
        raise InvalidContent(f"document is {len(data)} bytes, over the limit of {limits.max_bytes}")
    if not data.strip():
        raise InvalidContent("document is empty")
    if data.startswith(_WIDE_BOMS) or b"\x00" in data[:4]:
        raise InvalidContent("UTF-16 and UTF-32 are not accepted; send UTF-8")
    body = data[len(_UTF8_BOM):] if data.startswith(_UTF8_BOM) else data
    declaration = _DECLARATION.match(body)
    if declaration:
        pseudo = {name.decode(): value.decode("ascii", "replace")
                  for name, value in _PSEUDO_ATTRIBUTE.findall(declaration.group())}
        if pseudo.get("version") != "1.0":
            raise InvalidContent(f"XML version {pseudo.get('version')!r} is not accepted; use 1.0")
        encoding = pseudo.get("encoding", "UTF-8")
        if encoding.upper() != "UTF-8":
            raise InvalidContent(f"encoding {encoding!r} is not accepted; send UTF-8")
    elif body.startswith(_DECLARATION_STARTS):  # unchecked, its version and encoding would pass to libxml2
        raise InvalidContent("the XML declaration is malformed or longer than 200 characters")
    doctype = data.find(b"<!DOCTYPE")
    if doctype >= 0:
        # Anywhere, even inside a comment or CDATA: cheaper and safer than finding the prolog's end.
        raise InvalidContent(f"line {_line_of(data, doctype)}: DOCTYPE is not accepted "
                             "(no DTD, no entity declarations)")
    # Every element has one start tag, a "<" not followed by "/": this bounds the tree
    # before it is built. Comments or CDATA full of "<" can only make the bound stricter.
    start_tags = data.count(b"<") - data.count(b"</")
    if start_tags > limits.max_elements:
        raise InvalidContent(f"document has more than {limits.max_elements} elements")
    # Text that merely mentions "xmlns" can only make this bound stricter, like "<" above (and a document
    # too short to hold that many needs no count).
    if (len(data) > len(b"xmlns") * limits.max_namespace_declarations
            and data.count(b"xmlns") > limits.max_namespace_declarations):
        raise InvalidContent(f"document has more than {limits.max_namespace_declarations} namespace declarations")
    return _Scanned(start_tags, declaration.group().count(b"?") if declaration else 0)


def _check_tree(root: etree._Element, data: bytes, limits: XmlLimits, scanned: _Scanned) -> None:
    """Enforce what only the tree can tell, on a tree whose size is already bounded.

    Every check is linear in the document. Checks that cannot fail are skipped:
    no element can carry more attributes than the document has "=" signs, no
    text can be longer than the document, and no nesting be deeper than its
    number of tags.
    """
    if scanned.start_tags > limits.max_depth:  # no deeper than it has elements
        too_deep = root.xpath("/*" + "/*" * limits.max_depth)
        if too_deep:
            raise _refused(too_deep[0], f"nesting deeper than {limits.max_depth} elements")
    count_attributes = data.count(b"=") > limits.max_attributes
    check_text = len(data) > limits.max_text
    # The walk looks for processing instructions and XInclude elements besides counts and lengths. A
    # PI needs a "?" of its own (beyond the XML declaration's); an XInclude element its namespace, spelt
    # out or made of character references ("&"). With none of these, nothing is there to find.
    # (One-byte counts: a search for "<?" or "&#" costs more than the scan it would save.)
    if not (count_attributes or check_text or data.count(b"?") > scanned.declaration_marks
            or b"&" in data or b"XInclude" in data):
        return
    for node in root.iter():
        tag = node.tag
        if not isinstance(tag, str):  # comments are removed while parsing, so a PI
            raise _instruction(node)
        if tag.startswith(_XINCLUDE):
            raise _refused(node, "XInclude is not accepted")
        if count_attributes and len(node.attrib) > limits.max_attributes:  # len() only walks the list
            raise _refused(node, f"more than {limits.max_attributes} attributes on one element")
        if check_text:
            for text in (node.text, node.tail):
                if text is not None and len(text) > limits.max_text:
                    raise _refused(node, f"text is longer than {limits.max_text} characters")
    if check_text:
        # One pass in libxml2 over every attribute, instead of attrib.items() per element.
        too_long = root.xpath("//@*[string-length() > $limit]", limit=limits.max_text)
        if too_long:
            raise _refused(too_long[0].getparent(),
                           f"attribute {too_long[0].attrname} is longer than {limits.max_text} characters")
    for sibling in (*root.itersiblings(preceding=True), *root.itersiblings()):
        raise _instruction(sibling)


def _instruction(node: etree._Element) -> InvalidContent:
    return InvalidContent(f"line {node.sourceline}: processing instruction <?{node.target}?> is not accepted",
                          details={"line": node.sourceline})


def _refused(node: etree._Element, reason: str) -> InvalidContent:
    path = location(node)
    return InvalidContent(f"line {node.sourceline}, {path}: {reason}",
                          details={"line": node.sourceline, "path": path})


def _malformed(parser: etree.XMLParser, error: etree.XMLSyntaxError) -> InvalidContent:
    """Name the first error of this run: later ones are often its consequences."""
    first = next((entry for entry in parser.error_log if entry.level >= etree.ErrorLevels.ERROR), None)
    line, column, message = (first.line, first.column, first.message) if first else (*error.position, error.msg)
    return InvalidContent(f"line {line}, column {column}: not well-formed XML: {message}",
                          details={"line": line, "column": column})


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1
