"""SMEV 3 participants: information systems (RSMEV, EPGU, ...) known by the certificates they sign with.

SMEV authenticates a caller by its signature, not by a token: the certificate in
the verified signature's KeyInfo is looked up by the SHA-256 of its exact DER, and
its owner's mnemonic names the queue the caller reads. A mnemonic may hold several
certificates at once, so a rotation is "add the new one" without a gap. A
certificate outside its validity period is refused when used, not when added, so
an operator can register a successor before it starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.domain.faults import (
    InvalidContent,
    SenderIsNotRegistered,
    SignatureVerificationFault,
)
from broker.domain.mnemonics import mnemonic as checked_mnemonic
from broker.infra.postgres import outage_as_failure

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Participant:
    """One registered certificate of an information system."""

    mnemonic: str
    service: str | None
    subject: str
    serial_number: str
    """Hexadecimal, as certificate tools print it."""
    not_before: datetime
    not_after: datetime
    cert_sha256: bytes

    def valid_at(self, moment: datetime) -> bool:
        return self.not_before <= moment <= self.not_after


@dataclass(frozen=True)
class CertificateFacts:
    """What ejx records of a certificate: read with ``cryptography``, which parses GOST certificates too
    (only their keys are beyond it, and the signature verifier handles those)."""

    der: bytes
    subject: str
    serial_number: str
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_pem(cls, pem: bytes) -> CertificateFacts:
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError as error:
            raise InvalidContent(f"not a PEM X.509 certificate: {error}") from None
        return cls(der=certificate.public_bytes(Encoding.DER), subject=certificate.subject.rfc4514_string(),
                   serial_number=format(certificate.serial_number, "x"),
                   not_before=certificate.not_valid_before_utc, not_after=certificate.not_valid_after_utc)


def fingerprint(der: bytes) -> bytes:
    """The lookup key of a certificate: SHA-256 of its DER."""
    return hashlib.sha256(der).digest()


class Participants:
    """The participant registry in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, mnemonic: str, certificate: CertificateFacts, *, service: str | None = None) -> bool:
        """Register ``certificate`` for ``mnemonic``; False when it was registered already (for the same one).

        A certificate belongs to one participant: registering it for another is refused. Without
        ``service``, a new certificate of a known mnemonic takes the service its newest certificate has:
        a rotation done the same way as the first registration keeps the e-diary open to it."""
        checked_mnemonic(mnemonic, "participant")
        key = fingerprint(certificate.der)
        with outage_as_failure("the participant registry"):
            owner = await self._pool.fetchval(
                """INSERT INTO participants (cert_sha256, mnemonic, service, certificate, subject, serial_number,
                                             not_before, not_after)
                   VALUES ($1, $2, coalesce($3, (SELECT p.service FROM participants p
                                                  WHERE p.mnemonic = $2 AND p.service IS NOT NULL
                                                  ORDER BY p.not_after DESC LIMIT 1)),
                           $4, $5, $6, $7, $8)
                   ON CONFLICT (cert_sha256) DO UPDATE SET service = coalesce(excluded.service, participants.service)
                       WHERE participants.mnemonic = excluded.mnemonic
                   RETURNING (xmax = 0)""",
                key, mnemonic, service, certificate.der, certificate.subject, certificate.serial_number,
                certificate.not_before, certificate.not_after)
        if owner is None:
            raise InvalidContent(f"certificate {certificate.subject} (serial {certificate.serial_number}) "
                                 f"is registered for another participant")
        log.info("participants.added" if owner else "participants.kept", mnemonic=mnemonic, service=service,
                 subject=certificate.subject, serial_number=certificate.serial_number,
                 not_after=certificate.not_after.isoformat())
        return bool(owner)

    async def revoke(self, mnemonic: str, *, serial_number: str | None = None) -> list[Participant]:
        """Forget ``mnemonic``'s certificates (only the one of ``serial_number``, if given) and return them: a
        leaked key stops working on its very next request (the owner is looked up per request, no cache).
        Its queue stays, for a certificate added later. InvalidContent when nothing matched."""
        serial = None if serial_number is None else _serial(serial_number)
        with outage_as_failure("the participant registry"):
            rows = await self._pool.fetch(
                """DELETE FROM participants WHERE mnemonic = $1 AND ($2::text IS NULL OR serial_number = $2)
                   RETURNING mnemonic, service, subject, serial_number, not_before, not_after, cert_sha256""",
                mnemonic, serial)
        if not rows:
            which = "any certificate" if serial is None else f"a certificate of serial {serial}"
            raise InvalidContent(f"participant {mnemonic[:64]!r} has no {which}; see `ejx participants list`")
        removed = [Participant(**dict(row)) for row in rows]
        for participant in removed:
            log.info("participants.revoked", mnemonic=mnemonic, subject=participant.subject,
                     serial_number=participant.serial_number)
        return removed

    async def all(self) -> list[Participant]:
        with outage_as_failure("the participant registry"):
            rows = await self._pool.fetch(
                """SELECT mnemonic, service, subject, serial_number, not_before, not_after, cert_sha256
                   FROM participants ORDER BY mnemonic, not_after""")
        return [Participant(**dict(row)) for row in rows]

    async def owner(self, certificate_der: bytes, *, at: datetime | None = None) -> Participant:
        """The participant that signs with exactly this certificate, which must be valid at ``at`` (now).

        SenderIsNotRegistered for an unknown certificate; SignatureVerificationFault (CertificateIsExpired)
        for one outside its validity period."""
        with outage_as_failure("the participant registry"):
            row = await self._pool.fetchrow(
                """SELECT mnemonic, service, subject, serial_number, not_before, not_after, cert_sha256
                   FROM participants WHERE cert_sha256 = $1""", fingerprint(certificate_der))
        if row is None:
            raise SenderIsNotRegistered("the signing certificate belongs to no registered participant")
        participant = Participant(**dict(row))
        moment = at or datetime.now(UTC)
        if not participant.valid_at(moment):
            raise SignatureVerificationFault(
                f"certificate {participant.serial_number} of {participant.mnemonic} is valid from "
                f"{participant.not_before.isoformat()} to {participant.not_after.isoformat()}, not at "
                f"{moment.isoformat()}", details={"reason": "CertificateIsExpired"})
        return participant


def _serial(text: str) -> str:
    """A serial as ``participants list`` shows it, however a certificate tool printed it (``0x``, colons, case,
    leading zeros)."""
    digits = text.strip().lower().removeprefix("0x").replace(":", "").lstrip("0")
    return digits or "0"
