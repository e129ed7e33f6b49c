"""SMEV 3 on the wire: protocol versions, ejx's schemas and WSDL, and the lxml helpers every side shares.

Strict in what it writes (namespaced, no control characters, lower-case UUIDs, zoned timestamps), so nothing ejx
or its clients sign can carry what the SMEV transform would mangle; lenient in what it reads.
"""

from __future__ import annotations

import copy
import re
import threading
from datetime import datetime
from enum import Enum
from functools import partial
from pathlib import Path
from xml.sax.saxutils import quoteattr

from lxml import etree

from broker.domain.faults import InvalidContent
from broker.xml import hardened

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
DS = "http://www.w3.org/2000/09/xmldsig#"
PLACEHOLDER = "https://ejx.invalid/EJX_SMEV3_ENDPOINT"
"""The soap:address of the shipped WSDLs; :func:`wsdl` puts the serving URL in its place."""
_URN = "urn://x-artefacts-smev-gov-ru/services/message-exchange"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ufffe\uffff]")


class Version(Enum):
    """A protocol version: four namespaces each; 1.3 dropped GetIncomingQueueStatistics."""
    V1_2 = "1.2"
    V1_3 = "1.3"
    service = property(lambda self: f"{_URN}/{self.value}")
    types = property(lambda self: f"{_URN}/types/{self.value}")
    basic = property(lambda self: f"{_URN}/types/basic/{self.value}")
    faults = property(lambda self: f"{_URN}/types/faults/{self.value}")

    @property
    def operations(self) -> tuple[str, ...]:
        common = ("SendRequest", "SendResponse", "GetRequest", "GetResponse", "GetStatus", "Ack")
        return common + ("GetIncomingQueueStatistics",) if self is Version.V1_2 else common


def schema_dir() -> Path:
    """ejx's SMEV 3 schemas: inside the package when installed, else the repository's schemas/smev3."""
    packaged = Path(__file__).resolve().parents[1] / "xml" / "xsd" / "smev3"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "schemas" / "smev3"


SCHEMA_FILES = ("types.xsd", "basic.xsd", "faults.xsd")
"""The schema files of a version, served beside its WSDL (``<url>/types.xsd``...)."""


def wsdl(version: Version, url: str) -> bytes:
    """The WSDL of ``version``, its placeholder address replaced by the URL it is served on, and its schema
    imports made absolute (``<url>/types.xsd``), so a client that fetched ``<url>?wsdl`` finds them there."""
    text = (schema_dir() / version.value / "smev-message-exchange-service.wsdl").read_bytes()
    for name in SCHEMA_FILES:
        text = text.replace(f'schemaLocation="{name}"'.encode(),
                            f"schemaLocation={quoteattr(clean(url.rstrip('/') + '/' + name))}".encode())
    return text.replace(f'"{PLACEHOLDER}"'.encode(), quoteattr(clean(url)).encode())


def schema_file(version: Version, name: str) -> bytes:
    """One of :data:`SCHEMA_FILES` of ``version``, as shipped (their own imports are relative)."""
    if name not in SCHEMA_FILES:
        raise KeyError(name)
    return (schema_dir() / version.value / name).read_bytes()

# ---- validation and serialisation ----------------------------------------------------------------------------

_schemas: dict[Version, tuple[etree.XMLSchema, threading.Lock]] = {}
_compile_lock = threading.Lock()


def validate(root: etree._Element, version: Version | None = None) -> None:
    """Check an envelope against ejx's own schemas (compiled once per version); ``InvalidContent`` if not valid.
    The version, when not given, is that of the first SMEV 3 element."""
    version = version or next((v for node in root.iter() if isinstance(node.tag, str) for v in Version
                               if etree.QName(node).namespace in (v.types, v.basic, v.faults)), None)
    if version is None:
        raise InvalidContent("no SMEV 3 element: cannot tell the version")
    with _compile_lock:
        if version not in _schemas:
            parts = (SOAP, "soap-envelope-1.1.xsd"), (version.types, f"{version.value}/types.xsd"), (
                version.faults, f"{version.value}/faults.xsd")
            imports = "".join(f'<xs:import namespace="{ns}" schemaLocation="{(schema_dir() / path).as_uri()}"/>'
                              for ns, path in parts)
            driver = hardened.parse_trusted(
                f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'.encode())
            _schemas[version] = etree.XMLSchema(driver), threading.Lock()
    schema, lock = _schemas[version]
    with lock:  # one error log per compiled schema
        if schema.validate(root):
            return
        error = schema.error_log[0]
    raise InvalidContent(f"line {error.line}: {error.message}", details={"line": error.line})


def to_bytes(envelope: etree._Element) -> bytes:
    return etree.tostring(envelope, encoding="UTF-8", xml_declaration=True)


# ---- helpers -------------------------------------------------------------------------------------------------

def soap_envelope(version: Version, name: str, *content: etree._Element | None) -> etree._Element:
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "ns": version.types, "basic": version.basic})
    etree.SubElement(envelope, f"{{{SOAP}}}Body").append(el(version.types, name, *content))
    return envelope


def el(ns: str, name: str, *children: etree._Element | str | None, **attrib: str | None) -> etree._Element:
    """One namespaced element; a str child is its text; None or "" children and None attributes are left out."""
    node = etree.Element(f"{{{ns}}}{name}", {key: clean(value) for key, value in attrib.items() if value is not None})
    for child in children:
        if isinstance(child, str):
            node.text = clean(child) or None
        elif child is not None:
            node.append(child)
    return node


def signature_slot(t: partial, slot: str, signature: etree._Element | None) -> etree._Element | None:
    if signature is None:
        return None
    if signature.tag != f"{{{DS}}}Signature":
        raise ValueError(f"{slot} must hold a ds:Signature, not {signature.tag}")
    return t(slot, copy.deepcopy(signature))


def clean(text: object, *, lenient: bool = False) -> str:
    """Refuse control characters (signed content must not carry them); faults, built from errors, blank them."""
    text = str(text)
    if _CONTROL.search(text):
        if not lenient:
            raise ValueError(f"control character in {text[:60]!r}")
        text = " ".join(_CONTROL.sub(" ", text).split())
    return text


def lower_uuid(value: object, error: type[Exception] = ValueError) -> str:
    text = str(value or "").strip()
    if not _UUID.match(text):
        raise error(f"{text[:60]!r} is not a lower-case UUID")
    return text


def stamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return moment.isoformat(timespec="milliseconds")


def business_copy(content: etree._Element) -> etree._Element:
    """A copy of the business document; SMEV's transform refuses elements without a namespace."""
    if any(isinstance(node.tag, str) and not etree.QName(node).namespace for node in content.iter()):
        raise ValueError(f"business document {content.tag} holds elements without a namespace")
    return copy.deepcopy(content)


def same_version(version: Version, data: etree._Element, name: str) -> etree._Element:
    if data.tag != f"{{{version.types}}}{name}":
        raise ValueError(f"expected {name} of SMEV {version.value}, not {data.tag} (signed: cannot be re-versioned)")
    return copy.deepcopy(data)


def body_element(root: etree._Element) -> etree._Element:
    """The one element in the Body of a SOAP 1.1 Envelope."""
    if etree.QName(root).namespace == SOAP12:
        raise InvalidContent(f"SOAP 1.2 envelope: this service speaks SOAP 1.1 ({SOAP})")
    if root.tag != f"{{{SOAP}}}Envelope":
        raise InvalidContent(f"root element is {root.tag}, not a SOAP 1.1 Envelope")
    bodies = [child for child in child_elements(root) if child.tag == f"{{{SOAP}}}Body"]
    if len(bodies) != 1:
        raise InvalidContent(f"a SOAP Envelope needs exactly one Body, this one has {len(bodies)}")
    return single_child(bodies[0])


def child_elements(parent: etree._Element) -> list[etree._Element]:
    if (parent.text or "").strip() or any((child.tail or "").strip() for child in parent):
        raise InvalidContent(f"{etree.QName(parent).localname} holds text")
    return [child for child in parent if isinstance(child.tag, str)]


def single_child(parent: etree._Element) -> etree._Element:
    children = child_elements(parent)
    if len(children) != 1:
        raise InvalidContent(f"{etree.QName(parent).localname} must hold exactly one element, not {len(children)}")
    return children[0]


def find_child(parent: etree._Element, ns: str, name: str, *, required: bool = True) -> etree._Element | None:
    found = parent.find(f"{{{ns}}}{name}")
    if found is None and required:
        raise InvalidContent(f"{etree.QName(parent).localname} has no {{{ns}}}{name}")
    return found


def child_text(parent: etree._Element, ns: str, name: str, *, required: bool = False) -> str | None:
    node = find_child(parent, ns, name, required=required)
    return None if node is None else (node.text or "").strip()


def date_time(node: etree._Element) -> datetime:
    try:
        moment = datetime.fromisoformat((node.text or "").strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidContent(f"{etree.QName(node).localname} {node.text!r} is not a date-time with a time zone")
    return moment
