"""An interagency envelope as the SMEV 3 RequestMessage its recipient pulls, signed once, at enqueue.

Both signatures are made here, when the relay moves the outbox row into the queue:
the sender's over ``SenderProvidedRequestData Id="SIGNED_BY_CALLER"`` and
``SMEVSignature`` over ``Request Id="SIGNED_BY_SMEV"``. Nothing in a RequestMessage
depends on the moment it is handed out, so a hand-out costs no signature at all, and
a message handed out again after a crash is byte for byte the first one: same
MessageID, same signatures. The namespaces differ per protocol version, so each
message is signed in every version ejx serves (four signatures per message).

The algorithm is the key's (GOST R 34.10-2012 for real SMEV, RSA or ECDSA where a
destination wants those); nothing here assumes one.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from broker.delivery.outbox import OutboxMessage
from broker.smev3.client_requests import attach_signature, smev_signature
from broker.smev3.messages import (
    Metadata,
    request_message,
    sender_provided_request_data,
)
from broker.smev3.queue import QueuedRequest
from broker.smev3.wire import Version
from broker.xml import hardened
from broker.xml.envelope import read_envelope
from broker.xml.signing import SigningKey


@dataclass(frozen=True)
class SenderIdentity:
    """Who ejx says it is in MessageMetadata/Sender."""

    mnemonic: str = "EJX"
    """Sender/Mnemonic (EJX_SENDER)."""
    name: str = "ejx: school e-journal exchange"
    """Sender/HumanReadableName."""


class RequestMessages:
    """Builds and signs the RequestMessages of outbox rows with ejx's SMEV key (thread-safe: call it from
    worker threads, signing is CPU work)."""

    def __init__(self, key: SigningKey, *, sender: SenderIdentity = SenderIdentity()) -> None:
        self._key = key
        self._sender = sender

    @property
    def algorithm(self) -> str:
        """The SignatureMethod URI both signatures use."""
        return self._key.algorithm

    def build(self, message: OutboxMessage) -> QueuedRequest:
        """The row's envelope (ejx wrote and signed it; only its parts are taken) in every version."""
        header, content = read_envelope(hardened.parse_trusted(message.payload))
        name = etree.QName(content)
        signed = {version: etree.tostring(self._request_message(version, header, content, message.recipient))
                  for version in Version}
        return QueuedRequest(message_id=header.message_id, recipient=message.recipient,
                             namespace_uri=name.namespace, root_local_name=name.localname, messages=signed,
                             ordering_key=message.partition_key)

    def _request_message(self, version: Version, header, content: etree._Element, recipient: str) -> etree._Element:
        message_id = str(header.message_id)
        data = sender_provided_request_data(
            version, message_id=message_id, content=content, test=header.test,
            reference_message_id=str(header.reference_message_id) if header.reference_message_id else None,
            transaction_code=etree.QName(content).localname if version is Version.V1_2 else None)
        meta = Metadata(message_id=message_id, message_type="BROADCAST",
                        sender=(self._sender.mnemonic, self._sender.name),
                        sending_timestamp=header.sending_timestamp, destination_name=recipient,
                        recipient=(recipient, recipient))
        built = request_message(version, data, meta, reply_to=f"{self._sender.mnemonic}:{message_id}",
                                sender_signature=smev_signature(data, self._key))
        request = built[0]
        attach_signature(built, "SMEVSignature", smev_signature(request, self._key))
        return built
