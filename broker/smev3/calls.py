"""What callers send ejx: a SOAP 1.1 request read into a :class:`Call`, whose ``signed`` element the caller's
signature must cover. Dispatch is on the Body's element, never on SOAPAction, which some clients leave out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from broker.domain.faults import InvalidContent, UnknownMessageType
from broker.smev3.wire import (
    DS,
    Version,
    body_element,
    child_text,
    date_time,
    find_child,
    lower_uuid,
    single_child,
)

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
    """Identify and read a SOAP 1.1 request (root from ``broker.xml.hardened.parse``); refuse anything else.
    Dispatch is on the Body's element, never on SOAPAction, which some clients leave out."""
    element = body_element(root)
    name = etree.QName(element)
    version = next((v for v in Version if name.namespace == v.types), None)
    operation = name.localname.removesuffix("Request")
    if version is None or not name.localname.endswith("Request") or operation not in version.operations:
        raise UnknownMessageType(f"{name.text} is not an SMEV 3 message-exchange request ejx serves")
    b, t = version.basic, version.types
    slot = find_child(element, t, "CallerInformationSystemSignature", required=False)
    common = dict(operation=operation, version=version, element=element,
                  signature=None if slot is None else find_child(slot, DS, "Signature"))
    if operation in ("GetRequest", "GetResponse"):
        selector = find_child(element, b, "MessageTypeSelector")
        uri, local = child_text(selector, b, "NamespaceURI"), child_text(selector, b, "RootElementLocalName")
        if (uri is None) != (local is None):
            raise InvalidContent("MessageTypeSelector needs both NamespaceURI and RootElementLocalName, or neither")
        return GetMessage(**common, signed=selector, timestamp=date_time(find_child(selector, b, "Timestamp")),
                          namespace_uri=uri, root_local_name=local, node_id=child_text(selector, b, "NodeID"))
    if operation == "Ack":
        target = find_child(element, b, "AckTargetMessage")
        accepted = target.get("accepted", "true" if version is Version.V1_3 else None)  # optional in 1.3 only
        if accepted not in ("true", "false", "1", "0"):
            raise InvalidContent(f"AckTargetMessage/@accepted must be true or false, not {accepted!r}")
        return Ack(**common, signed=target, message_id=lower_uuid(target.text, InvalidContent),
                   accepted=accepted in ("true", "1"))
    if operation in ("GetStatus", "GetIncomingQueueStatistics"):
        stamp = find_child(element, b, "Timestamp")
        return QueueQuery(**common, signed=stamp, timestamp=date_time(stamp), node_id=child_text(element, t, "NodeID"))
    data = find_child(element, t, f"SenderProvided{operation.removeprefix('Send')}Data")
    message_id = lower_uuid(child_text(data, t, "MessageID", required=True), InvalidContent)
    box = find_child(data, b, "MessagePrimaryContent", required=operation == "SendRequest")
    content = None if box is None else single_child(box)
    if operation == "SendRequest":
        return SendRequest(**common, signed=data, message_id=message_id, content=content,
                           reference_message_id=child_text(data, t, "ReferenceMessageID"),
                           transaction_code=child_text(data, t, "TransactionCode"),
                           test=find_child(data, t, "TestMessage", required=False) is not None)
    rejections = tuple((child_text(r, t, "RejectionReasonCode") or "", child_text(r, t, "RejectionReasonDescription") or "")
                       for r in data.iterfind(f"{{{t}}}RequestRejected"))
    return SendResponse(**common, signed=data, message_id=message_id, to=child_text(data, t, "To", required=True),
                        content=content, rejections=rejections)


