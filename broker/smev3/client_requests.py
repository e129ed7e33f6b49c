"""A client's side of SMEV 3: the requests it signs (:class:`Unsigned` names the element to sign) and the
server's answers it reads; used by ejx's reference client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial

from lxml import etree

from broker.domain.faults import UnknownMessageType, fault_from_code
from broker.xml.signing import SMEV_TRANSFORMS, SigningKey, sign_reference
from broker.smev3.wire import (
    DS,
    SOAP,
    Version,
    body_element,
    child_elements,
    el,
    find_child,
    lower_uuid,
    same_version,
    signature_slot,
    soap_envelope,
    stamp,
)


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
    element = body_element(root)
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
    children = child_elements(element)
    slot = next(element.iter(f"{{{version.types}}}SMEVSignature"), None)
    return Answer(operation, version, element, children[0] if children else None,
                  None if slot is None else slot.getprevious(), None if slot is None else find_child(slot, DS, "Signature"))


@dataclass(frozen=True)
class Unsigned:
    """A client request before signing: CallerInformationSystemSignature must cover ``target`` (its Id)."""
    envelope: etree._Element
    target: etree._Element


def get_request(version: Version, *, timestamp: datetime, namespace_uri: str | None = None,
                root_local_name: str | None = None, node_id: str | None = None, id: str = "SIGNED_BY_CALLER",
                operation: str = "GetRequest") -> Unsigned:
    """GetRequest (or operation="GetResponse") for the caller's queue, filtered by business root if given."""
    if (namespace_uri is None) != (root_local_name is None):
        raise ValueError("give both namespace_uri and root_local_name, or neither")
    b = partial(el, version.basic)
    selector = b("MessageTypeSelector", namespace_uri and b("NamespaceURI", namespace_uri),
                 root_local_name and b("RootElementLocalName", root_local_name), b("Timestamp", stamp(timestamp)),
                 node_id and b("NodeID", node_id), Id=id)
    return Unsigned(soap_envelope(version, f"{operation}Request", selector), selector)


def ack(version: Version, message_id: str, *, accepted: bool = True, id: str = "SIGNED_BY_CALLER") -> Unsigned:
    """Ack of a MessageID taken from the queue; accepted=False: its SMEV signature was refused."""
    target = el(version.basic, "AckTargetMessage", lower_uuid(message_id), Id=id, accepted=str(bool(accepted)).lower())
    return Unsigned(soap_envelope(version, "AckRequest", target), target)


def send(version: Version, sender_data: etree._Element) -> Unsigned:
    """SendRequest around SenderProvidedRequestData, or SendResponse around SenderProvidedResponseData."""
    kind = etree.QName(sender_data).localname.removeprefix("SenderProvided").removesuffix("Data")
    data = same_version(version, sender_data, f"SenderProvided{kind}Data")
    return Unsigned(soap_envelope(version, f"Send{kind}Request", data), data)


def smev_signature(target: etree._Element, key: SigningKey) -> etree._Element:
    """A ds:Signature over ``target`` with the SMEV 3 chain (exc-c14n, then the SMEV transform), whatever the
    key: the transform makes the digest independent of namespace prefixes, which lxml changes when a stored
    message is placed into an answer envelope (RSA/ECDSA's own chain broke every handed-out signature)."""
    return sign_reference(target, key, transforms=SMEV_TRANSFORMS)


def attach_signature(parent: etree._Element, slot: str, signature: etree._Element) -> etree._Element:
    """Append ``<slot>`` holding a copy of ``signature`` (ds:Signature) as the last child of ``parent``."""
    holder = signature_slot(partial(el, etree.QName(parent).namespace), slot, signature)
    parent.append(holder)
    return holder

