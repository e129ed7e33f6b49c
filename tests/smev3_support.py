"""SMEV 3 test kit: GOST keys for ejx and for agencies, an exchange app on a real database, signed requests."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from lxml import etree

from broker.access.participants import CertificateFacts, Participants
from broker.delivery.outbox import OutboxMessage
from broker.smev3 import codec
from broker.smev3.diary import DiaryOptions, DiaryService
from broker.smev3.exchange import ExchangeOptions, MessageExchange
from broker.smev3.outgoing import RequestMessages
from broker.smev3.queue import QueueOptions, SmevQueue
from broker.smev3.service import smev3_router
from broker.xml import hardened
from broker.xml.envelope import build_envelope, read_envelope
from broker.xml.schemas import Schemas
from broker.xml.signing import SigningKey, gost, sign_reference
from broker.xml.signing.keys import DevCertificateOptions, self_signed_certificate
from tests.delivery_support import serving, term_grade_xml


@dataclass(frozen=True)
class Pair:
    key: SigningKey
    cert_pem: bytes
    key_pem: bytes

    @property
    def facts(self) -> CertificateFacts:
        return CertificateFacts.from_pem(self.cert_pem)


def gost_pair(common_name: str) -> Pair:
    key_pem, cert_pem = gost.generate_key_and_certificate(common_name)
    return Pair(SigningKey.from_pem(key_pem, cert_pem), cert_pem, key_pem)


def ecdsa_pair(common_name: str, *, not_before: datetime | None = None, valid_days: int = 365) -> Pair:
    """A non-GOST pair; ``not_before`` in the past with a short validity makes an expired certificate."""
    private = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed_certificate(private, not_before=not_before,
                                          options=DevCertificateOptions(common_name=common_name,
                                                                        valid_days=valid_days))
    key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    return Pair(SigningKey.from_pem(key_pem, cert_pem), cert_pem, key_pem)


def expired_pair(common_name: str) -> Pair:
    return ecdsa_pair(common_name, not_before=datetime.now(UTC) - timedelta(days=30), valid_days=10)


def signed(unsigned: codec.Unsigned, key: SigningKey) -> bytes:
    """A client request with CallerInformationSystemSignature over its target."""
    codec.attach_signature(unsigned.target.getparent(), "CallerInformationSystemSignature",
                           sign_reference(unsigned.target, key))
    return codec.to_bytes(unsigned.envelope)


def get_request(version: codec.Version, key: SigningKey, *, timestamp: datetime | None = None, **selector) -> bytes:
    return signed(codec.get_request(version, timestamp=timestamp or datetime.now(UTC), **selector), key)


def ack(version: codec.Version, key: SigningKey, message_id: str, *, accepted: bool = True) -> bytes:
    return signed(codec.ack(version, message_id, accepted=accepted), key)


SCHEMAS = Schemas.load()


@asynccontextmanager
async def exchange_app(pool, *, visibility_timeout_s: float = 60.0, diary_key: SigningKey | None = None,
                       diary_options: DiaryOptions = DiaryOptions()):
    """ejx's SMEV 3 endpoint alone, served on a free port: yields its base URL. With ``diary_key`` (ejx's
    SMEV key) it serves the e-diary service too."""
    app = FastAPI()
    queue = SmevQueue(pool, options=QueueOptions(visibility_timeout_s=visibility_timeout_s))
    diary = None if diary_key is None else DiaryService(pool=pool, schemas=SCHEMAS, key=diary_key,
                                                        options=diary_options)
    app.include_router(smev3_router(MessageExchange(queue=queue, participants=Participants(pool), diary=diary,
                                                    options=ExchangeOptions())))
    async with serving(app) as base:
        yield base


async def enqueue(pool, smev_key: SigningKey, *, recipient: str = "RSMEV", record: str = "term-1",
                  test: bool = False) -> str:
    """One TermGradeFinalized in ``recipient``'s queue, as the relay puts it there; returns its MessageID."""
    envelope = build_envelope(term_grade_xml(record), recipient=recipient, test=test)
    header, _ = read_envelope(envelope)
    row = OutboxMessage(id=0, message_id=header.message_id, destination="interagency", partition_key=record,
                        payload=hardened.to_bytes(envelope), recipient=recipient,
                        message_type="TermGradeFinalized", attempts=1, lease_id=uuid.uuid4())
    assert await SmevQueue(pool).put([RequestMessages(smev_key).build(row)]) == {header.message_id}
    return str(header.message_id)


def answer_of(response, version: codec.Version):
    """The parsed SOAP answer, checked against ejx's XSD (every answer in the tests is)."""
    root = hardened.parse(response.content, limits=hardened.XmlLimits(max_bytes=8 << 20))
    codec.validate(root, version)
    return root


def fault_code(root) -> str:
    detail = root.find(f"{{{codec.SOAP}}}Body/{{{codec.SOAP}}}Fault/detail")
    return etree.QName(detail[0]).localname
