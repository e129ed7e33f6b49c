"""SMEV 3 message exchange (1.2, 1.3) over SOAP 1.1: read what callers send, build what ejx and its clients send.

Pure lxml, no I/O, no signatures: parsing hands the verifier each signed element and its ds:Signature; builders
leave the signature slots (always the last child of their parent) to :func:`attach_signature`. Strict in what it
writes (valid against ejx's schemas, a subset of the official ones; namespaced; no control characters), lenient in
what it reads (only what ejx uses is required).
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Iterable, Mapping
from xml.sax.saxutils import quoteattr

from lxml import etree

from broker.domain.faults import (
    AccessDenied,
    DestinationOverflow,
    Fault,
    InvalidContent,
    MessageIsAlreadySent,
    SenderIsNotRegistered,
    SignatureVerificationFault,
    TargetMessageIsNotFound,
    UnknownMessageType,
    fault_from_code,
)
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


def wsdl(version: Version, url: str) -> bytes:
    """The WSDL of ``version``, its placeholder address replaced by the URL it is served on."""
    text = (schema_dir() / version.value / "smev-message-exchange-service.wsdl").read_bytes()
    return text.replace(f'"{PLACEHOLDER}"'.encode(), quoteattr(_clean(url)).encode())


# ---- reading requests ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One parsed request: ``signed`` is the element the caller's signature covers (by its Id)."""
    operation: str
    version: Version
    element: etree._Element  # the Body's element, e.g. GetRequestRequest
    signed: etree._Element
    signature: etree._Element | None  # ds:Signature inside CallerInformationSystemSignature


@dataclass(frozen=True)
class GetMessage(Call):
    """GetRequest / GetResponse: the signed MessageTypeSelector, its filter and the caller's clock."""
    timestamp: datetime
    namespace_uri: str | None
    root_local_name: str | None
    node_id: str | None


@dataclass(frozen=True)
class Ack(Call):
    message_id: str
    accepted: bool


@dataclass(frozen=True)
class QueueQuery(Call):
    """GetStatus / GetIncomingQueueStatistics: the signed Timestamp."""
    timestamp: datetime
    node_id: str | None


@dataclass(frozen=True)
class SendRequest(Call):
    message_id: str
    reference_message_id: str | None
    transaction_code: str | None
    content: etree._Element  # the business root element
    test: bool


@dataclass(frozen=True)
class SendResponse(Call):
    message_id: str
    to: str
    content: etree._Element | None
    rejections: tuple[tuple[str, str], ...]  # (RejectionReasonCode, RejectionReasonDescription)


def parse_request(root: etree._Element) -> Call:
    """Identify and read a SOAP 1.1 request (root from ``broker.xmlsafe.parse``); refuse anything else.
    Dispatch is on the Body's element, never on SOAPAction, which some clients leave out."""
    element = _body(root)
    name = etree.QName(element)
    version = next((v for v in Version if name.namespace == v.types), None)
    operation = name.localname.removesuffix("Request")
    if version is None or not name.localname.endswith("Request") or operation not in version.operations:
        raise UnknownMessageType(f"{name.text} is not an SMEV 3 message-exchange request ejx serves")
    b, t = version.basic, version.types
    slot = _child(element, t, "CallerInformationSystemSignature", required=False)
    common = dict(operation=operation, version=version, element=element,
                  signature=None if slot is None else _child(slot, DS, "Signature"))
    if operation in ("GetRequest", "GetResponse"):
        selector = _child(element, b, "MessageTypeSelector")
        uri, local = _text(selector, b, "NamespaceURI"), _text(selector, b, "RootElementLocalName")
        if (uri is None) != (local is None):
            raise InvalidContent("MessageTypeSelector needs both NamespaceURI and RootElementLocalName, or neither")
        return GetMessage(**common, signed=selector, timestamp=_when(_child(selector, b, "Timestamp")),
                          namespace_uri=uri, root_local_name=local, node_id=_text(selector, b, "NodeID"))
    if operation == "Ack":
        target = _child(element, b, "AckTargetMessage")
        accepted = target.get("accepted", "true" if version is Version.V1_3 else None)  # optional in 1.3 only
        if accepted not in ("true", "false", "1", "0"):
            raise InvalidContent(f"AckTargetMessage/@accepted must be true or false, not {accepted!r}")
        return Ack(**common, signed=target, message_id=_uuid(target.text, InvalidContent),
                   accepted=accepted in ("true", "1"))
    if operation in ("GetStatus", "GetIncomingQueueStatistics"):
        stamp = _child(element, b, "Timestamp")
        return QueueQuery(**common, signed=stamp, timestamp=_when(stamp), node_id=_text(element, t, "NodeID"))
    data = _child(element, t, f"SenderProvided{operation.removeprefix('Send')}Data")
    message_id = _uuid(_text(data, t, "MessageID", required=True), InvalidContent)
    box = _child(data, b, "MessagePrimaryContent", required=operation == "SendRequest")
    content = None if box is None else _single(box)
    if operation == "SendRequest":
        return SendRequest(**common, signed=data, message_id=message_id, content=content,
                           reference_message_id=_text(data, t, "ReferenceMessageID"),
                           transaction_code=_text(data, t, "TransactionCode"),
                           test=_child(data, t, "TestMessage", required=False) is not None)
    rejections = tuple((_text(r, t, "RejectionReasonCode") or "", _text(r, t, "RejectionReasonDescription") or "")
                       for r in data.iterfind(f"{{{t}}}RequestRejected"))
    return SendResponse(**common, signed=data, message_id=message_id, to=_text(data, t, "To", required=True),
                        content=content, rejections=rejections)


@dataclass(frozen=True)
class Answer:
    """A server's answer, for ejx's reference client: ``message`` is None when the queue was empty."""
    operation: str
    version: Version
    element: etree._Element  # e.g. GetResponseResponse
    message: etree._Element | None  # RequestMessage, ResponseMessage, MessageMetadata, SmevAsyncProcessingMessage…
    signed: etree._Element | None  # what SMEVSignature covers: the element before it
    signature: etree._Element | None  # ds:Signature inside SMEVSignature


def parse_answer(root: etree._Element) -> Answer:
    """Read an answer; a soap:Fault is raised as the project's fault of that code (SMEVFailure: ``Failure``)."""
    element = _body(root)
    if element.tag == f"{{{SOAP}}}Fault":
        detail = element.find("detail")
        nodes = [] if detail is None else [node for node in detail if isinstance(node.tag, str)]
        names = [etree.QName(node).localname for node in nodes]
        code = names[0] if names else "SMEVFailure"
        raise fault_from_code("Failure" if code == "SMEVFailure" else code, element.findtext("faultstring") or code)
    name = etree.QName(element)
    version = next((v for v in Version if name.namespace == v.types), None)
    operation = name.localname.removesuffix("Response")
    if version is None or not name.localname.endswith("Response") or operation not in version.operations:
        raise UnknownMessageType(f"{name.text} is not an SMEV 3 message-exchange answer")
    children = _elements(element)
    slot = next(element.iter(f"{{{version.types}}}SMEVSignature"), None)
    return Answer(operation, version, element, children[0] if children else None,
                  None if slot is None else slot.getprevious(), None if slot is None else _child(slot, DS, "Signature"))


# ---- building what ejx and its clients send ------------------------------------------------------------------

@dataclass(frozen=True)
class Metadata:
    """The exchange's facts about one message; DestinationName and InteractionType are written in 1.2 only."""
    message_id: str
    message_type: str  # REQUEST, BROADCAST or RESPONSE
    sender: tuple[str, str]  # (Mnemonic, HumanReadableName)
    sending_timestamp: datetime
    destination_name: str = "unknown"
    recipient: tuple[str, str] | None = None
    interaction_type: str = "OIV2OIV"
    delivery_timestamp: datetime | None = None
    status: str | None = None


@dataclass(frozen=True)
class Unsigned:
    """A client request before signing: CallerInformationSystemSignature must cover ``target`` (its Id)."""
    envelope: etree._Element
    target: etree._Element


REJECTION_CODES = {Version.V1_2: ("ACCESS_DENIED", "NO_DATA", "UNKNOWN_REQUEST_DESCRIPTION"),
                   Version.V1_3: ("ACCESS_DENIED", "NO_DATA", "UNKNOWN_REQUEST_DESCRIPTION", "FAILURE")}


def sender_provided_request_data(version: Version, *, message_id: str, content: etree._Element,
                                 reference_message_id: str | None = None, transaction_code: str | None = None,
                                 test: bool = False, id: str = "SIGNED_BY_CALLER") -> etree._Element:
    """What a requester signs. 1.2 requires TransactionCode and ReferenceMessageID (a new chain: the MessageID)."""
    t, v12 = partial(_e, version.types), version is Version.V1_2
    if transaction_code is None and v12:
        raise ValueError("SMEV 1.2 requires a TransactionCode")
    reference = reference_message_id or (message_id if v12 else None)
    return t("SenderProvidedRequestData", t("MessageID", _uuid(message_id)),
             reference and t("ReferenceMessageID", _uuid(reference)),
             None if transaction_code is None else t("TransactionCode", transaction_code),
             _e(version.basic, "MessagePrimaryContent", _business(content)), t("TestMessage") if test else None, Id=id)


def sender_provided_response_data(version: Version, *, message_id: str, to: str,
                                  content: etree._Element | None = None, rejections: Iterable[tuple[str, str]] = (),
                                  id: str = "SIGNED_BY_CALLER") -> etree._Element:
    """What a responder signs: the business answer, or (code, description) rejections (codes: REJECTION_CODES)."""
    t, rejections = partial(_e, version.types), list(rejections)
    if (content is None) == (not rejections):
        raise ValueError("a response holds either content or rejections")
    if any(code not in REJECTION_CODES[version] for code, _ in rejections):
        raise ValueError(f"SMEV {version.value} rejection codes are {', '.join(REJECTION_CODES[version])}")
    return t("SenderProvidedResponseData", t("MessageID", _uuid(message_id)), t("To", to),
             None if content is None else _e(version.basic, "MessagePrimaryContent", _business(content)),
             *(t("RequestRejected", t("RejectionReasonCode", code), t("RejectionReasonDescription", text))
               for code, text in rejections), Id=id)


def message_metadata(version: Version, meta: Metadata, *, id: str | None = None) -> etree._Element:
    """MessageMetadata, in the official order of ``version``."""
    t, v12 = partial(_e, version.types), version is Version.V1_2
    party = lambda name, who: who and t(name, t("Mnemonic", who[0]), t("HumanReadableName", who[1]))  # noqa: E731
    when = lambda name, moment: moment and t(name, _stamp(moment))  # noqa: E731
    return t("MessageMetadata", t("MessageId", _uuid(meta.message_id)), t("MessageType", meta.message_type),
             party("Sender", meta.sender), when("SendingTimestamp", meta.sending_timestamp),
             t("DestinationName", meta.destination_name) if v12 else None, party("Recipient", meta.recipient),
             t("SupplementaryData", t("InteractionType", meta.interaction_type)) if v12 else None,
             when("DeliveryTimestamp", meta.delivery_timestamp), meta.status and t("Status", meta.status), Id=id)


def request_message(version: Version, sender_data: etree._Element, meta: Metadata, reply_to: str, *,
                    sender_signature: etree._Element | None = None,
                    smev_signature: etree._Element | None = None) -> etree._Element:
    """RequestMessage: the sender's signed data, untouched, inside Request Id=SIGNED_BY_SMEV."""
    t = partial(_e, version.types)
    request = t("Request", _same_version(version, sender_data, "SenderProvidedRequestData"),
                message_metadata(version, meta), t("ReplyTo", reply_to),
                _slot(t, "SenderInformationSystemSignature", sender_signature), Id="SIGNED_BY_SMEV")
    return t("RequestMessage", request, _slot(t, "SMEVSignature", smev_signature))


def response_message(version: Version, sender_data: etree._Element, meta: Metadata, *, original_message_id: str,
                     original_transaction_code: str | None = None, reference_message_id: str | None = None,
                     sender_signature: etree._Element | None = None,
                     smev_signature: etree._Element | None = None) -> etree._Element:
    """ResponseMessage; 1.2 requires the request's transaction code and chain id (default: the request's id)."""
    t, v12 = partial(_e, version.types), version is Version.V1_2
    if original_transaction_code is None and v12:
        raise ValueError("SMEV 1.2 requires the OriginalTransactionCode")
    reference = reference_message_id or (original_message_id if v12 else None)
    response = t("Response", t("OriginalMessageId", _uuid(original_message_id)),
                 None if original_transaction_code is None else t("OriginalTransactionCode", original_transaction_code),
                 reference and t("ReferenceMessageID", _uuid(reference)),
                 _same_version(version, sender_data, "SenderProvidedResponseData"), message_metadata(version, meta),
                 _slot(t, "SenderInformationSystemSignature", sender_signature), Id="SIGNED_BY_SMEV")
    return t("ResponseMessage", response, _slot(t, "SMEVSignature", smev_signature))


def answer(version: Version, operation: str, *content: etree._Element | None) -> etree._Element:
    """The envelope of ``<operation>Response``: GetRequest / GetResponse with a message (none: the queue is empty),
    empty Ack. For SendRequest / SendResponse see :func:`accepted`."""
    return _envelope(version, f"{operation}Response", *content)


def accepted(version: Version, operation: str, meta: Metadata,
             smev_signature: etree._Element | None = None) -> etree._Element:
    """SendRequestResponse / SendResponseResponse: the metadata (Id SIGNED_BY_SMEV), then SMEVSignature."""
    return answer(version, operation, message_metadata(version, meta, id="SIGNED_BY_SMEV"),
                  _slot(partial(_e, version.types), "SMEVSignature", smev_signature))


def get_status_response(version: Version, original_message_id: str | None = None, category: str = "",
                        details: str | None = None, smev_signature: etree._Element | None = None) -> etree._Element:
    """GetStatusResponse: empty when no status is waiting, else one AsyncProcessingStatus."""
    t = partial(_e, version.types)
    if original_message_id is None:
        return answer(version, "GetStatus")
    status = t("AsyncProcessingStatus", t("OriginalMessageId", _uuid(original_message_id)),
               t("StatusCategory", category), details and t("StatusDetails", details))
    return answer(version, "GetStatus", t("SmevAsyncProcessingMessage", t("AsyncProcessingStatusData", status,
                                                                            Id="SIGNED_BY_SMEV"),
                                          _slot(t, "SMEVSignature", smev_signature)))


def queue_statistics_response(version: Version, pending: Mapping[str, int]) -> etree._Element:
    """GetIncomingQueueStatisticsResponse (1.2 only): pending messages per queue name."""
    if version is not Version.V1_2:
        raise ValueError("GetIncomingQueueStatistics does not exist in SMEV 1.3")
    return answer(version, "GetIncomingQueueStatistics", *(
        _e(version.types, "QueueStatistics", queueName=name, pendingMessageNumber=str(int(count)))
        for name, count in pending.items()))


_WIRE_NAMES = {cls.code: cls.code for cls in (InvalidContent, SignatureVerificationFault, UnknownMessageType,
                                              AccessDenied, SenderIsNotRegistered, MessageIsAlreadySent,
                                              TargetMessageIsNotFound, DestinationOverflow)}
_SIGNATURE_PROBLEMS = ("PoorSOAPEnvelopeFormat", "NoSignatureFound", "IncorrectSignatureTarget",
                       "SignatureIsInvalid", "CertificateIsNotFound", "CertificateIsExpired")


def fault(version: Version, error: Fault) -> etree._Element:
    """soap:Fault (faultcode soap:Server), its detail the SMEV fault named by ``error.code``; any other code,
    the project's retriable ``Failure`` among them, is SMEVFailure. Only InvalidContent, SignatureVerificationFault
    and DestinationOverflow carry Code and Description: the official schema makes the others empty (Void)."""
    name, f, b = _WIRE_NAMES.get(error.code, "SMEVFailure"), partial(_e, version.faults), partial(_e, version.basic)
    text, details = _clean(error.description, lenient=True) or name, error.details
    if name == "InvalidContent":
        line = details.get("line")
        extra = [f("ValidationError", text, errorPosition=str(line if isinstance(line, int) else -1))]
    elif name == "SignatureVerificationFault":
        reason = details.get("reason")
        extra = [f(name, reason if reason in _SIGNATURE_PROBLEMS else "SignatureIsInvalid")]
    elif name == "DestinationOverflow":
        extra = [f("MessageBrokerAddress", str(details.get("broker", "ejx"))),
                 f("DestinationName", str(details.get("destination", "")))]
    else:
        extra = None
    detail = f(name) if extra is None else f(name, b("Code", name), b("Description", text), *extra)
    envelope = etree.Element(f"{{{SOAP}}}Envelope",
                             nsmap={"soap": SOAP, "fault": version.faults, "basic": version.basic})
    node = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP}}}Body"), f"{{{SOAP}}}Fault")
    etree.SubElement(node, "faultcode").text = "soap:Server"  # SOAP 1.1's own fields are unqualified
    etree.SubElement(node, "faultstring").text = text
    etree.SubElement(node, "detail").append(detail)
    return envelope


def get_request(version: Version, *, timestamp: datetime, namespace_uri: str | None = None,
                root_local_name: str | None = None, node_id: str | None = None, id: str = "SIGNED_BY_CALLER",
                operation: str = "GetRequest") -> Unsigned:
    """GetRequest (or operation="GetResponse") for the caller's queue, filtered by business root if given."""
    if (namespace_uri is None) != (root_local_name is None):
        raise ValueError("give both namespace_uri and root_local_name, or neither")
    b = partial(_e, version.basic)
    selector = b("MessageTypeSelector", namespace_uri and b("NamespaceURI", namespace_uri),
                 root_local_name and b("RootElementLocalName", root_local_name), b("Timestamp", _stamp(timestamp)),
                 node_id and b("NodeID", node_id), Id=id)
    return Unsigned(_envelope(version, f"{operation}Request", selector), selector)


def ack(version: Version, message_id: str, *, accepted: bool = True, id: str = "SIGNED_BY_CALLER") -> Unsigned:
    """Ack of a MessageID taken from the queue; accepted=False: its SMEV signature was refused."""
    target = _e(version.basic, "AckTargetMessage", _uuid(message_id), Id=id, accepted=str(bool(accepted)).lower())
    return Unsigned(_envelope(version, "AckRequest", target), target)


def send(version: Version, sender_data: etree._Element) -> Unsigned:
    """SendRequest around SenderProvidedRequestData, or SendResponse around SenderProvidedResponseData."""
    kind = etree.QName(sender_data).localname.removeprefix("SenderProvided").removesuffix("Data")
    data = _same_version(version, sender_data, f"SenderProvided{kind}Data")
    return Unsigned(_envelope(version, f"Send{kind}Request", data), data)


def attach_signature(parent: etree._Element, slot: str, signature: etree._Element) -> etree._Element:
    """Append ``<slot>`` holding a copy of ``signature`` (ds:Signature) as the last child of ``parent``."""
    holder = _slot(partial(_e, etree.QName(parent).namespace), slot, signature)
    parent.append(holder)
    return holder


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

def _envelope(version: Version, name: str, *content: etree._Element | None) -> etree._Element:
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "ns": version.types, "basic": version.basic})
    etree.SubElement(envelope, f"{{{SOAP}}}Body").append(_e(version.types, name, *content))
    return envelope


def _e(ns: str, name: str, *children: etree._Element | str | None, **attrib: str | None) -> etree._Element:
    """One namespaced element; a str child is its text; None or "" children and None attributes are left out."""
    node = etree.Element(f"{{{ns}}}{name}", {key: _clean(value) for key, value in attrib.items() if value is not None})
    for child in children:
        if isinstance(child, str):
            node.text = _clean(child) or None
        elif child is not None:
            node.append(child)
    return node


def _slot(t: partial, slot: str, signature: etree._Element | None) -> etree._Element | None:
    if signature is None:
        return None
    if signature.tag != f"{{{DS}}}Signature":
        raise ValueError(f"{slot} must hold a ds:Signature, not {signature.tag}")
    return t(slot, copy.deepcopy(signature))


def _clean(text: object, *, lenient: bool = False) -> str:
    """Refuse control characters (signed content must not carry them); faults, built from errors, blank them."""
    text = str(text)
    if _CONTROL.search(text):
        if not lenient:
            raise ValueError(f"control character in {text[:60]!r}")
        text = " ".join(_CONTROL.sub(" ", text).split())
    return text


def _uuid(value: object, error: type[Exception] = ValueError) -> str:
    text = str(value or "").strip()
    if not _UUID.match(text):
        raise error(f"{text[:60]!r} is not a lower-case UUID")
    return text


def _stamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return moment.isoformat(timespec="milliseconds")


def _business(content: etree._Element) -> etree._Element:
    """A copy of the business document; SMEV's transform refuses elements without a namespace."""
    if any(isinstance(node.tag, str) and not etree.QName(node).namespace for node in content.iter()):
        raise ValueError(f"business document {content.tag} holds elements without a namespace")
    return copy.deepcopy(content)


def _same_version(version: Version, data: etree._Element, name: str) -> etree._Element:
    if data.tag != f"{{{version.types}}}{name}":
        raise ValueError(f"expected {name} of SMEV {version.value}, not {data.tag} (signed: cannot be re-versioned)")
    return copy.deepcopy(data)


def _body(root: etree._Element) -> etree._Element:
    """The one element in the Body of a SOAP 1.1 Envelope."""
    if etree.QName(root).namespace == SOAP12:
        raise InvalidContent(f"SOAP 1.2 envelope: this service speaks SOAP 1.1 ({SOAP})")
    if root.tag != f"{{{SOAP}}}Envelope":
        raise InvalidContent(f"root element is {root.tag}, not a SOAP 1.1 Envelope")
    bodies = [child for child in _elements(root) if child.tag == f"{{{SOAP}}}Body"]
    if len(bodies) != 1:
        raise InvalidContent(f"a SOAP Envelope needs exactly one Body, this one has {len(bodies)}")
    return _single(bodies[0])


def _elements(parent: etree._Element) -> list[etree._Element]:
    if (parent.text or "").strip() or any((child.tail or "").strip() for child in parent):
        raise InvalidContent(f"{etree.QName(parent).localname} holds text")
    return [child for child in parent if isinstance(child.tag, str)]


def _single(parent: etree._Element) -> etree._Element:
    children = _elements(parent)
    if len(children) != 1:
        raise InvalidContent(f"{etree.QName(parent).localname} must hold exactly one element, not {len(children)}")
    return children[0]


def _child(parent: etree._Element, ns: str, name: str, *, required: bool = True) -> etree._Element | None:
    found = parent.find(f"{{{ns}}}{name}")
    if found is None and required:
        raise InvalidContent(f"{etree.QName(parent).localname} has no {{{ns}}}{name}")
    return found


def _text(parent: etree._Element, ns: str, name: str, *, required: bool = False) -> str | None:
    node = _child(parent, ns, name, required=required)
    return None if node is None else (node.text or "").strip()


def _when(node: etree._Element) -> datetime:
    try:
        moment = datetime.fromisoformat((node.text or "").strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidContent(f"{etree.QName(node).localname} {node.text!r} is not a date-time with a time zone")
    return moment
