"""What ejx sends: messages, their metadata, answers and faults. Signature slots (always the last child of their
parent) are filled by the caller with ds:Signature elements, or left out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Iterable, Mapping

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
)
from broker.smev3.wire import (
    SOAP,
    Version,
    business_copy,
    clean,
    el,
    lower_uuid,
    same_version,
    signature_slot,
    soap_envelope,
    stamp,
)

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




REJECTION_CODES = {Version.V1_2: ("ACCESS_DENIED", "NO_DATA", "UNKNOWN_REQUEST_DESCRIPTION"),
                   Version.V1_3: ("ACCESS_DENIED", "NO_DATA", "UNKNOWN_REQUEST_DESCRIPTION", "FAILURE")}


def sender_provided_request_data(version: Version, *, message_id: str, content: etree._Element,
                                 reference_message_id: str | None = None, transaction_code: str | None = None,
                                 test: bool = False, id: str = "SIGNED_BY_CALLER") -> etree._Element:
    """What a requester signs. 1.2 requires TransactionCode and ReferenceMessageID (a new chain: the MessageID)."""
    t, v12 = partial(el, version.types), version is Version.V1_2
    if transaction_code is None and v12:
        raise ValueError("SMEV 1.2 requires a TransactionCode")
    reference = reference_message_id or (message_id if v12 else None)
    return t("SenderProvidedRequestData", t("MessageID", lower_uuid(message_id)),
             reference and t("ReferenceMessageID", lower_uuid(reference)),
             None if transaction_code is None else t("TransactionCode", transaction_code),
             el(version.basic, "MessagePrimaryContent", business_copy(content)), t("TestMessage") if test else None, Id=id)


def sender_provided_response_data(version: Version, *, message_id: str, to: str,
                                  content: etree._Element | None = None, rejections: Iterable[tuple[str, str]] = (),
                                  id: str = "SIGNED_BY_CALLER") -> etree._Element:
    """What a responder signs: the business answer, or (code, description) rejections (codes: REJECTION_CODES)."""
    t, rejections = partial(el, version.types), list(rejections)
    if (content is None) == (not rejections):
        raise ValueError("a response holds either content or rejections")
    if any(code not in REJECTION_CODES[version] for code, _ in rejections):
        raise ValueError(f"SMEV {version.value} rejection codes are {', '.join(REJECTION_CODES[version])}")
    return t("SenderProvidedResponseData", t("MessageID", lower_uuid(message_id)), t("To", to),
             None if content is None else el(version.basic, "MessagePrimaryContent", business_copy(content)),
             *(t("RequestRejected", t("RejectionReasonCode", code), t("RejectionReasonDescription", text))
               for code, text in rejections), Id=id)


def message_metadata(version: Version, meta: Metadata, *, id: str | None = None) -> etree._Element:
    """MessageMetadata, in the official order of ``version``."""
    t, v12 = partial(el, version.types), version is Version.V1_2
    party = lambda name, who: who and t(name, t("Mnemonic", who[0]), t("HumanReadableName", who[1]))  # noqa: E731
    when = lambda name, moment: moment and t(name, stamp(moment))  # noqa: E731
    return t("MessageMetadata", t("MessageId", lower_uuid(meta.message_id)), t("MessageType", meta.message_type),
             party("Sender", meta.sender), when("SendingTimestamp", meta.sending_timestamp),
             t("DestinationName", meta.destination_name) if v12 else None, party("Recipient", meta.recipient),
             t("SupplementaryData", t("InteractionType", meta.interaction_type)) if v12 else None,
             when("DeliveryTimestamp", meta.delivery_timestamp), meta.status and t("Status", meta.status), Id=id)


def request_message(version: Version, sender_data: etree._Element, meta: Metadata, reply_to: str, *,
                    sender_signature: etree._Element | None = None,
                    smev_signature: etree._Element | None = None) -> etree._Element:
    """RequestMessage: the sender's signed data, untouched, inside Request Id=SIGNED_BY_SMEV."""
    t = partial(el, version.types)
    request = t("Request", same_version(version, sender_data, "SenderProvidedRequestData"),
                message_metadata(version, meta), t("ReplyTo", reply_to),
                signature_slot(t, "SenderInformationSystemSignature", sender_signature), Id="SIGNED_BY_SMEV")
    return t("RequestMessage", request, signature_slot(t, "SMEVSignature", smev_signature))


def response_message(version: Version, sender_data: etree._Element, meta: Metadata, *, original_message_id: str,
                     original_transaction_code: str | None = None, reference_message_id: str | None = None,
                     sender_signature: etree._Element | None = None,
                     smev_signature: etree._Element | None = None) -> etree._Element:
    """ResponseMessage; 1.2 requires the request's transaction code and chain id (default: the request's id)."""
    t, v12 = partial(el, version.types), version is Version.V1_2
    if original_transaction_code is None and v12:
        raise ValueError("SMEV 1.2 requires the OriginalTransactionCode")
    reference = reference_message_id or (original_message_id if v12 else None)
    response = t("Response", t("OriginalMessageId", lower_uuid(original_message_id)),
                 None if original_transaction_code is None else t("OriginalTransactionCode", original_transaction_code),
                 reference and t("ReferenceMessageID", lower_uuid(reference)),
                 same_version(version, sender_data, "SenderProvidedResponseData"), message_metadata(version, meta),
                 signature_slot(t, "SenderInformationSystemSignature", sender_signature), Id="SIGNED_BY_SMEV")
    return t("ResponseMessage", response, signature_slot(t, "SMEVSignature", smev_signature))


def answer(version: Version, operation: str, *content: etree._Element | None) -> etree._Element:
    """The envelope of ``<operation>Response``: GetRequest / GetResponse with a message (none: the queue is empty),
    empty Ack. For SendRequest / SendResponse see :func:`accepted`."""
    return soap_envelope(version, f"{operation}Response", *content)


def accepted(version: Version, operation: str, meta: Metadata,
             smev_signature: etree._Element | None = None) -> etree._Element:
    """SendRequestResponse / SendResponseResponse: the metadata (Id SIGNED_BY_SMEV), then SMEVSignature."""
    return answer(version, operation, message_metadata(version, meta, id="SIGNED_BY_SMEV"),
                  signature_slot(partial(el, version.types), "SMEVSignature", smev_signature))


def get_status_response(version: Version, original_message_id: str | None = None, category: str = "",
                        details: str | None = None, smev_signature: etree._Element | None = None) -> etree._Element:
    """GetStatusResponse: empty when no status is waiting, else one AsyncProcessingStatus."""
    t = partial(el, version.types)
    if original_message_id is None:
        return answer(version, "GetStatus")
    status = t("AsyncProcessingStatus", t("OriginalMessageId", lower_uuid(original_message_id)),
               t("StatusCategory", category), details and t("StatusDetails", details))
    return answer(version, "GetStatus", t("SmevAsyncProcessingMessage", t("AsyncProcessingStatusData", status,
                                                                            Id="SIGNED_BY_SMEV"),
                                          signature_slot(t, "SMEVSignature", smev_signature)))


def queue_statistics_response(version: Version, pending: Mapping[str, int]) -> etree._Element:
    """GetIncomingQueueStatisticsResponse (1.2 only): pending messages per queue name."""
    if version is not Version.V1_2:
        raise ValueError("GetIncomingQueueStatistics does not exist in SMEV 1.3")
    return answer(version, "GetIncomingQueueStatistics", *(
        el(version.types, "QueueStatistics", queueName=name, pendingMessageNumber=str(int(count)))
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
    name, f, b = _WIRE_NAMES.get(error.code, "SMEVFailure"), partial(el, version.faults), partial(el, version.basic)
    text, details = clean(error.description, lenient=True) or name, error.details
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


