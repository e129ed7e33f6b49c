"""The SMEV-style envelope: build it around one canonical event, read its parts back.

The header sits inside ``SenderProvidedData`` so the sender's signature covers
MessageID, Recipient and TestMessage too (see ``schemas/envelope.xsd``).
Building and reading check structure only; schema validation is
:class:`broker.xml.schemas.Schemas`' job and signatures are :mod:`broker.xml.signing`'s.

:func:`signed_block` writes SenderProvidedData directly in its exclusive c14n,
the octets the signature digests, so the router signs and stores an envelope
without building, canonicalising or serialising a tree (a third of its time
per event before). Every envelope, unsigned ones included, is made from it.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from lxml import etree

from broker.domain.faults import InvalidContent, UnknownMessageType
from broker.domain.mnemonics import mnemonic
from broker.xml import hardened

ENVELOPE_NS = "urn://ejx/envelope/1"
EVENTS_NS = "urn://ejx/events/1"

ENVELOPE = f"{{{ENVELOPE_NS}}}Envelope"
SENDER_PROVIDED_DATA = f"{{{ENVELOPE_NS}}}SenderProvidedData"
HEADER = f"{{{ENVELOPE_NS}}}Header"
MESSAGE_PRIMARY_CONTENT = f"{{{ENVELOPE_NS}}}MessagePrimaryContent"
SIGNATURE_CONTAINER = f"{{{ENVELOPE_NS}}}CallerInformationSystemSignature"
SIGNED_DATA_ID = "SIGNED_BY_CALLER"
"""SenderProvidedData's Id, the same in every envelope (as SMEV 3's SIGNED_BY_CALLER). libxml2's XSD
validation interns each xs:ID value into the validating thread's dictionary, which never shrinks:
an Id per MessageID grew the router by ~75 bytes per envelope for its whole life (0.9 MiB/min at 200/s)."""

_MESSAGE_ID = f"{{{ENVELOPE_NS}}}MessageID"
_REFERENCE_MESSAGE_ID = f"{{{ENVELOPE_NS}}}ReferenceMessageID"
_MESSAGE_TYPE = f"{{{ENVELOPE_NS}}}MessageType"
_SENDER = f"{{{ENVELOPE_NS}}}Sender"
_RECIPIENT = f"{{{ENVELOPE_NS}}}Recipient"
_SENDING_TIMESTAMP = f"{{{ENVELOPE_NS}}}SendingTimestamp"
_TEST_MESSAGE = f"{{{ENVELOPE_NS}}}TestMessage"
_DECLARATION = b"<?xml version='1.0' encoding='UTF-8'?>\n"
_XSI_NS = b"http://www.w3.org/2001/XMLSchema-instance"
_XSI_TYPE = etree.XPath("boolean(descendant-or-self::*/@xsi:type)", namespaces={"xsi": _XSI_NS.decode()})


class MessageType(StrEnum):
    """SMEV 3 message kinds."""

    REQUEST = "REQUEST"
    RESPONSE = "RESPONSE"
    BROADCAST = "BROADCAST"


@dataclass(frozen=True)
class EnvelopeHeader:
    """What a receiver routes and de-duplicates on; all of it is signed."""

    message_id: uuid.UUID
    message_type: MessageType
    sender: str
    recipient: str
    sending_timestamp: datetime
    test: bool = False
    reference_message_id: uuid.UUID | None = None


_UUID_EPOCH = 0x01B21DD213814000
"""100-ns intervals from UUID's epoch (1582-10-15) to Unix's."""
_ids_lock = threading.Lock()
_last_stamp = 0
_id_tail = 0
"""Variant, clock sequence and node: the low 64 bits of every MessageID this process makes."""


def _new_id_tail() -> None:
    """A random clock sequence and a random node with the multicast bit set (RFC 4122 4.5: never a
    real MAC), drawn at import and again in a forked child."""
    global _id_tail, _last_stamp
    _id_tail = (0x8000 | secrets.randbits(14)) << 48 | secrets.randbits(48) | 1 << 40
    _last_stamp = 0


_new_id_tail()
os.register_at_fork(after_in_child=_new_id_tail)


def new_message_id() -> uuid.UUID:
    """A version-1 UUID, as SMEV 3 requires for MessageID.

    Unique within the process because the timestamp strictly increases (under a lock: the router makes
    them in worker threads), and across processes by 62 random bits of clock sequence and node.
    ``uuid.uuid1()`` goes through libuuid's safe mode, which locks a clock file on every call
    (7.3 µs against 2 µs here, 6 % of the router's samples on busy cores); its pure-Python fallback
    is not thread-safe.
    """
    global _last_stamp
    with _ids_lock:
        stamp = _last_stamp = max(time.time_ns() // 100 + _UUID_EPOCH, _last_stamp + 1)
    return uuid.UUID(int=(stamp & 0xFFFFFFFF) << 96 | (stamp >> 32 & 0xFFFF) << 80
                     | (0x1000 | stamp >> 48 & 0x0FFF) << 64 | _id_tail)


def signed_block(
    event: etree._Element,
    *,
    recipient: str,
    sender: str = "EJX",
    message_type: MessageType = MessageType.REQUEST,
    test: bool = False,
    reference_message_id: uuid.UUID | str | None = None,
    message_id: uuid.UUID | str | None = None,
    sending_timestamp: datetime | None = None,
) -> bytes:
    """SenderProvidedData around ``event``, as the exclusive c14n of itself: the octets a signature digests.

    ``event`` must be valid against ``events.xsd`` (the router has just checked
    it); every header value is checked here against the envelope schema's types,
    so the block is valid by construction. Exclusive c14n of a subtree does not
    depend on its context, so the event's own c14n is the content's, and the
    block stays canonical inside :func:`envelope_document`.

    Pass ``message_id`` when re-building a message that already has one: the
    MessageID is fixed once per message, so a retry must not mint a new one.
    """
    if etree.QName(event).namespace != EVENTS_NS:
        raise UnknownMessageType(f"primary content {event.tag} is not in the events namespace {EVENTS_NS}")
    mid = _message_id(message_id, "MessageID") if message_id is not None else new_message_id()
    sent = sending_timestamp or datetime.now(UTC)
    if sent.tzinfo is None:
        raise InvalidContent("SendingTimestamp needs an explicit time zone")
    if sent.utcoffset() % timedelta(minutes=1):
        raise InvalidContent("SendingTimestamp's offset must be whole minutes (xs:dateTime)")
    reference = ("" if reference_message_id is None else
                 f"<ReferenceMessageID>{_message_id(reference_message_id, 'ReferenceMessageID')}</ReferenceMessageID>")
    try:
        content = etree.tostring(event, method="c14n", exclusive=True, with_comments=False)
    except etree.C14NError:  # a relative namespace URI, even one declared and never used; the XSD lets it pass
        raise InvalidContent(f"primary content {etree.QName(event).localname} cannot be canonicalized "
                             "(exclusive XML c14n): every namespace URI in it must be absolute") from None
    # An xsi:type attribute keeps its namespace's declaration in the c14n: the tree is searched only then.
    if _XSI_NS in content and _XSI_TYPE(event):
        # events.xsd admits it, but its value is a QName, and exclusive c14n keeps only the namespaces that
        # tags and attribute names use: a prefix used in the value alone ends up unbound in the envelope.
        raise InvalidContent("primary content must not carry xsi:type (canonical events have no attributes)")
    return b"".join((
        f'<SenderProvidedData xmlns="{ENVELOPE_NS}" Id="{SIGNED_DATA_ID}"><Header><MessageID>{mid}</MessageID>'
        f"{reference}<MessageType>{MessageType(message_type).value}</MessageType>"
        f"<Sender>{mnemonic(sender, 'Sender')}</Sender><Recipient>{mnemonic(recipient, 'Recipient')}</Recipient>"
        f"<SendingTimestamp>{sent.isoformat(timespec='milliseconds')}</SendingTimestamp>"
        f"{'<TestMessage></TestMessage>' if test else ''}</Header><MessagePrimaryContent>".encode(),
        content,
        b"</MessagePrimaryContent></SenderProvidedData>"))


def envelope_document(block: bytes, signature: bytes | None = None) -> bytes:
    """The envelope as a UTF-8 document: :func:`signed_block`'s octets verbatim, then the ds:Signature."""
    signed = () if signature is None else (b"<CallerInformationSystemSignature>", signature,
                                           b"</CallerInformationSystemSignature>")
    return b"".join((_DECLARATION, f'<Envelope xmlns="{ENVELOPE_NS}">'.encode(), block, *signed, b"</Envelope>"))


def build_envelope(event: etree._Element | bytes, **header: object) -> etree._Element:
    """An unsigned envelope around ``event`` as a tree (to print or to sign in place); the arguments
    are :func:`signed_block`'s."""
    event_root = hardened.parse(event) if isinstance(event, bytes) else event
    return hardened.parse_trusted(envelope_document(signed_block(event_root, **header)))  # type: ignore[arg-type]


def read_envelope(envelope: etree._Element) -> tuple[EnvelopeHeader, etree._Element]:
    """The header and the primary content's root element, from an envelope or its SenderProvidedData.

    Structure only: nothing here says the content was signed; take the parts of
    a received message from :meth:`broker.xml.signing.Verifier.verify` instead.
    """
    data = sender_provided_data(envelope) if envelope.tag == ENVELOPE else envelope
    if data.tag != SENDER_PROVIDED_DATA:
        raise InvalidContent(f"expected Envelope or SenderProvidedData, got {envelope.tag}")
    parts = _children(data)
    header = _only(data, parts, HEADER)
    content = _only(data, parts, MESSAGE_PRIMARY_CONTENT)
    roots = [child for child in content if isinstance(child.tag, str)]
    if len(roots) != 1:
        raise InvalidContent(f"MessagePrimaryContent must hold exactly one element, found {len(roots)}")
    fields = _children(header)
    try:
        message_type = MessageType(_text(header, fields, _MESSAGE_TYPE))
    except ValueError as error:
        raise InvalidContent(f"unknown MessageType: {error}") from None
    try:
        sent = datetime.fromisoformat(_text(header, fields, _SENDING_TIMESTAMP))
    except ValueError as error:
        raise InvalidContent(f"SendingTimestamp: {error}") from None
    if sent.tzinfo is None:
        raise InvalidContent("SendingTimestamp needs an explicit time zone")
    reference = fields.get(_REFERENCE_MESSAGE_ID)
    return EnvelopeHeader(
        message_id=_message_id(_text(header, fields, _MESSAGE_ID), "MessageID"),
        message_type=message_type,
        sender=_text(header, fields, _SENDER),
        recipient=_text(header, fields, _RECIPIENT),
        sending_timestamp=sent,
        test=_TEST_MESSAGE in fields,
        reference_message_id=(_message_id(reference[0].text or "", "ReferenceMessageID")
                              if reference else None),
    ), roots[0]


def sender_provided_data(envelope: etree._Element) -> etree._Element:
    """The envelope's one SenderProvidedData, which must be its first child."""
    if envelope.tag != ENVELOPE:
        raise InvalidContent(f"root element is {envelope.tag}, expected {ENVELOPE}")
    data = _only(envelope, _children(envelope), SENDER_PROVIDED_DATA)
    if next(envelope.iterchildren(tag=etree.Element)) is not data:
        raise InvalidContent("SenderProvidedData must be the Envelope's first element")
    return data


def _children(parent: etree._Element) -> dict[str, list[etree._Element]]:
    """Child elements by tag, in one pass (one ``findall`` per tag walks the children and its path again)."""
    found: dict[str, list[etree._Element]] = {}
    for child in parent:
        if isinstance(child.tag, str):
            found.setdefault(child.tag, []).append(child)
    return found


def _only(parent: etree._Element, children: dict[str, list[etree._Element]], tag: str) -> etree._Element:
    found = children.get(tag, ())
    if len(found) != 1:
        raise InvalidContent(f"{etree.QName(parent).localname} must hold exactly one "
                             f"{etree.QName(tag).localname}, found {len(found)}")
    return found[0]


def _text(parent: etree._Element, children: dict[str, list[etree._Element]], tag: str) -> str:
    return (_only(parent, children, tag).text or "").strip()


def _message_id(value: uuid.UUID | str, field: str) -> uuid.UUID:
    """A lower-case version-1 UUID, or InvalidContent."""
    if isinstance(value, str):
        if value != value.lower():
            raise InvalidContent(f"{field} must be lower case: {value!r}")
        try:
            value = uuid.UUID(value)
        except ValueError:
            raise InvalidContent(f"{field} is not a UUID: {value!r}") from None
    if value.version != 1:
        raise InvalidContent(f"{field} must be a version-1 UUID: {value}")
    return value
