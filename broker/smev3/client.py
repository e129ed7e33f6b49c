"""ejx's reference SMEV 3 client: GetRequest, SendRequest, GetResponse and Ack signed with the caller's key,
every answer verified.

What an agency's own client must do, written once: sign the MessageTypeSelector
(and later the AckTargetMessage) with the key its participant registration names,
verify every signature of the answer — the sender's over SenderProvidedRequestData,
the exchange's over Request — and read MessageID, content and TestMessage only from
the elements those signatures cover. Trust in the signers is pinned: the
certificates given as ``trusted`` (the exchange's), when given, are the only ones
accepted. The caller records a message durably and only then acknowledges it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import h11
import structlog
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from broker.domain.faults import Failure, Fault, SignatureVerificationFault
from broker.infra.http_client import KeepAliveClient
from broker.smev3.client_requests import (
    Unsigned,
    ack,
    attach_signature,
    get_request,
    parse_answer,
    send,
    smev_signature,
)
from broker.smev3.wire import Version, date_time, find_child, single_child, to_bytes
from broker.xml import hardened
from broker.xml.signing import (
    SigningKey,
    VerifiedSignature,
    find_signatures,
    keys,
    verify_reference,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ClientOptions:
    """How the client talks to an SMEV 3 endpoint."""

    version: Version = Version.V1_2
    """Protocol version; must match the endpoint URL (…/1.2 or …/1.3)."""
    namespace_uri: str | None = None
    """With ``root_local_name``: only messages of this business root (MessageTypeSelector)."""
    root_local_name: str | None = None
    timeout_s: float = 10.0
    """Per request."""
    max_connections: int = 8
    max_answer_bytes: int = 4 << 20
    """Longest answer read."""


@dataclass(frozen=True)
class ReceivedMessage:
    """A verified RequestMessage: every field comes from signed elements."""

    message_id: uuid.UUID
    reference_message_id: uuid.UUID | None
    content: etree._Element
    """The business document, MessagePrimaryContent's one child."""
    test: bool
    sender: str
    sending_timestamp: datetime
    signatures: tuple[VerifiedSignature, ...]
    document: bytes
    """The whole answer as received: what an archive keeps, for ``ejx verify`` later."""


@dataclass(frozen=True)
class ReceivedResponse:
    """A verified ResponseMessage: every field comes from signed elements."""

    message_id: uuid.UUID
    """SenderProvidedResponseData/MessageID: what to acknowledge."""
    original_message_id: uuid.UUID
    """The request this answers."""
    to: str
    content: etree._Element | None
    """The business answer, or None when the request was rejected."""
    rejections: tuple[tuple[str, str], ...]
    """(RejectionReasonCode, RejectionReasonDescription) of a rejected request."""
    sending_timestamp: datetime
    signatures: tuple[VerifiedSignature, ...]
    document: bytes


@dataclass(frozen=True)
class Pulled:
    """One answer to GetRequest that held a message: verified, or refused with the (unsigned) MessageID hint."""

    message_id: uuid.UUID
    message: ReceivedMessage | None
    refusal: Fault | None

    @property
    def refuse_for_good(self) -> bool:
        """Ack it accepted=false, which SMEV takes as "ignored" and never hands out again: only when its bytes
        fail (a digest or a SignatureValue), never for anything a rotation, a newly pinned certificate or a
        clock mends (untrusted, expired or not yet valid certificates, ...): such a message comes back after
        its visibility timeout."""
        return self.refusal is not None and self.refusal.details.get("reason") == "SignatureIsInvalid"


def pinned_certificates(path: Path) -> frozenset[bytes]:
    """The DER of every certificate in a PEM file: what ``trusted`` takes."""
    return frozenset(c.public_bytes(Encoding.DER) for c in keys.load_certificates(path))


class Smev3Client:
    """One participant's client of one endpoint; safe for concurrent use."""

    def __init__(self, url: str, key: SigningKey, *, trusted: frozenset[bytes] | None = None,
                 options: ClientOptions = ClientOptions()) -> None:
        self._http = KeepAliveClient(url, timeout_s=options.timeout_s, max_connections=options.max_connections,
                                     max_answer_bytes=options.max_answer_bytes)
        self._key = key
        self._trusted = trusted
        self._options = options

    async def get_request(self) -> Pulled | None:
        """The next message of our queue, or None when it is empty; faults of the endpoint are raised."""
        o = self._options
        body = await asyncio.to_thread(self._signed, get_request(
            o.version, timestamp=datetime.now(UTC), namespace_uri=o.namespace_uri, root_local_name=o.root_local_name))
        data = await self._post(body)
        return await asyncio.to_thread(self._read_message, data)

    async def send_request(self, sender_data: etree._Element) -> datetime:
        """SendRequest of our signed SenderProvidedRequestData; the exchange's SendingTimestamp, once its
        signature over the MessageMetadata it answered (Id SIGNED_BY_SMEV) verified. Faults are raised."""
        body = await asyncio.to_thread(self._signed, send(self._options.version, sender_data))
        data = await self._post(body)
        return await asyncio.to_thread(self._read_accepted, data)

    async def get_response(self) -> ReceivedResponse | None:
        """The next response in our queue, verified, or None when there is none; faults are raised, and a
        response whose signatures do not verify is SignatureVerificationFault (not acknowledged: it comes back)."""
        o = self._options
        body = await asyncio.to_thread(self._signed, get_request(
            o.version, timestamp=datetime.now(UTC), namespace_uri=o.namespace_uri,
            root_local_name=o.root_local_name, operation="GetResponse"))
        data = await self._post(body)
        return await asyncio.to_thread(self._read_response, data)

    async def ack(self, message_id: uuid.UUID, *, accepted: bool = True) -> None:
        """Acknowledge a message; accepted=False when its signatures were refused."""
        body = await asyncio.to_thread(self._signed, ack(self._options.version, str(message_id), accepted=accepted))
        parse_answer(hardened.parse(await self._post(body)))
        log.info("smev3_client.acknowledged", message_id=str(message_id), accepted=accepted)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _signed(self, request: Unsigned) -> bytes:
        attach_signature(request.target.getparent(), "CallerInformationSystemSignature",
                         smev_signature(request.target, self._key))
        return to_bytes(request.envelope)

    async def _post(self, body: bytes) -> bytes:
        action = etree.QName(single_child(hardened.parse_trusted(body)[0])).localname.removesuffix("Request")
        try:
            answer = await self._http.post(body, headers=(("Content-Type", "text/xml; charset=utf-8"),
                                                          ("SOAPAction", f"urn:{action}")))
        except TimeoutError as error:
            raise Failure(f"SMEV endpoint timed out: {error!r}") from error
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as error:
            raise Failure(f"SMEV endpoint unreachable: {error!r}") from error
        if answer.status not in (200, 500) or not answer.body:
            raise Failure(f"SMEV endpoint answered HTTP {answer.status}")
        return answer.body

    def _read_message(self, data: bytes) -> Pulled | None:
        """Parse (a fault is raised as its fault), then verify every signature (worker thread)."""
        root = hardened.parse(data, limits=hardened.XmlLimits(max_bytes=self._options.max_answer_bytes))
        answer = parse_answer(root)
        if answer.message is None:
            return None
        t = answer.version.types
        request = find_child(answer.message, t, "Request")
        hint = uuid.UUID(request.findtext(f"{{{t}}}MessageMetadata/{{{t}}}MessageId") or str(uuid.UUID(int=0)))
        try:
            return Pulled(hint, self._verified(answer.version, root, data), None)
        except SignatureVerificationFault as fault:
            log.warning("smev3_client.refused", message_id=str(hint), code=fault.code, error=fault.description)
            return Pulled(hint, None, fault)

    def _read_accepted(self, data: bytes) -> datetime:
        answer = parse_answer(hardened.parse(data, limits=hardened.XmlLimits(max_bytes=self._options.max_answer_bytes)))
        t = answer.version.types
        if answer.message is None or answer.message.tag != f"{{{t}}}MessageMetadata" or answer.signature is None:
            raise SignatureVerificationFault("SendRequestResponse needs MessageMetadata signed by SMEVSignature")
        verified = self._trusted_signatures([answer.signature])[0]
        if verified.covered is not answer.message:
            raise SignatureVerificationFault("SMEVSignature does not cover the MessageMetadata")
        return date_time(find_child(answer.message, t, "SendingTimestamp"))

    def _read_response(self, data: bytes) -> ReceivedResponse | None:
        """Parse, then verify SMEVSignature over Response and ejx's over the SenderProvidedResponseData
        inside it (worker thread)."""
        root = hardened.parse(data, limits=hardened.XmlLimits(max_bytes=self._options.max_answer_bytes))
        answer = parse_answer(root)
        if answer.message is None:
            return None
        t, b = answer.version.types, answer.version.basic
        signatures = self._trusted_signatures(find_signatures(root))
        response, sender_data = _pair(signatures, f"{{{t}}}Response", f"{{{t}}}SenderProvidedResponseData")
        box = find_child(sender_data, b, "MessagePrimaryContent", required=False)
        rejections = tuple((r.findtext(f"{{{t}}}RejectionReasonCode") or "",
                            r.findtext(f"{{{t}}}RejectionReasonDescription") or "")
                           for r in sender_data.iterfind(f"{{{t}}}RequestRejected"))
        return ReceivedResponse(
            message_id=uuid.UUID(find_child(sender_data, t, "MessageID").text),
            original_message_id=uuid.UUID(find_child(response, t, "OriginalMessageId").text),
            to=find_child(sender_data, t, "To").text or "", content=None if box is None else single_child(box),
            rejections=rejections,
            sending_timestamp=date_time(find_child(find_child(response, t, "MessageMetadata"), t,
                                                   "SendingTimestamp")),
            signatures=signatures, document=data)

    def _trusted_signatures(self, found: list[etree._Element]) -> tuple[VerifiedSignature, ...]:
        signatures = tuple(verify_reference(s) for s in found)
        untrusted = [s.subject for s in signatures if self._trusted is not None
                     and s.certificate_der not in self._trusted]
        if untrusted:
            raise SignatureVerificationFault(f"signed by untrusted certificates: {untrusted}",
                                             details={"reason": "CertificateIsNotTrusted"})
        return signatures

    def _verified(self, version: Version, root: etree._Element, data: bytes) -> ReceivedMessage:
        signatures = self._trusted_signatures(find_signatures(root))
        t, b = version.types, version.basic
        request, sender_data = _pair(signatures, f"{{{t}}}Request", f"{{{t}}}SenderProvidedRequestData")
        meta = find_child(request, t, "MessageMetadata")
        message_id = uuid.UUID(sender_data.findtext(f"{{{t}}}MessageID"))
        reference = sender_data.findtext(f"{{{t}}}ReferenceMessageID")
        return ReceivedMessage(
            message_id=message_id,  # 1.2 starts a chain with ReferenceMessageID = MessageID: that is no reference
            reference_message_id=uuid.UUID(reference) if reference and uuid.UUID(reference) != message_id else None,
            content=single_child(find_child(sender_data, b, "MessagePrimaryContent")),
            test=find_child(sender_data, t, "TestMessage", required=False) is not None,
            sender=meta.findtext(f"{{{t}}}Sender/{{{t}}}Mnemonic") or "",
            sending_timestamp=date_time(find_child(meta, t, "SendingTimestamp")),
            signatures=signatures, document=data)


def _pair(signatures: tuple[VerifiedSignature, ...], outer: str, inner: str) -> tuple[etree._Element, etree._Element]:
    """The ``outer`` element SMEVSignature covers (Id SIGNED_BY_SMEV) and the ``inner`` one inside it its
    sender's signature covers (Id SIGNED_BY_CALLER): what a message's fields may be read from."""
    covered = {s.reference_id: s.covered for s in signatures}
    smev, sender = covered.get("SIGNED_BY_SMEV"), covered.get("SIGNED_BY_CALLER")
    if smev is None or smev.tag != outer or sender is None or sender.tag != inner or sender.getparent() is not smev:
        raise SignatureVerificationFault(f"the message needs SMEVSignature over {etree.QName(outer).localname} and "
                                         f"the sender's signature over the {etree.QName(inner).localname} inside it")
    return smev, sender
