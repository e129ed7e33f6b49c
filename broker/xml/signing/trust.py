"""Which certificates a verifier believes: pinned ones, or ones issued directly by a configured CA.

A certificate in KeyInfo is only a claim by the sender. It is believed if it
equals a pinned certificate, or is issued directly by a configured CA
certificate (CA basic constraint set; intermediates go into the bundle); it
must be meant for signatures (key usage) and, with its issuer, be inside its
validity period. Verdicts are cached per certificate, but the clock is read on
every use, so a cached certificate still expires on time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from broker.domain.faults import SignatureVerificationFault


class TrustedCertificates:
    """Pinned certificates and the CA certificates among them; every refusal is a SignatureVerificationFault."""

    _cache_limit = 1024

    def __init__(self, trusted: Iterable[x509.Certificate], *, check_validity_period: bool = True) -> None:
        trusted = list(trusted)
        self._check_validity_period = check_validity_period
        self._pinned = {c.public_bytes(serialization.Encoding.DER) for c in trusted}
        self._authorities = [c for c in trusted if _is_ca(c)]
        self._cache: dict[bytes, _Trust] = {}

    @property
    def pinned(self) -> int:
        """How many certificates are trusted as they are."""
        return len(self._pinned)

    @property
    def authorities(self) -> int:
        """How many of them are CA certificates that may issue others."""
        return len(self._authorities)

    def check(self, der: bytes) -> tuple[x509.Certificate, PublicKeyTypes]:
        """The certificate (DER) and its key if trusted now."""
        trust = self._cache.get(der)
        if trust is None:
            trust = self._trust(der)
            if len(self._cache) >= self._cache_limit:
                self._cache.clear()
            self._cache[der] = trust
        if self._check_validity_period and not trust.not_before <= datetime.now(UTC) <= trust.not_after:
            raise SignatureVerificationFault(
                f"certificate {trust.certificate.subject.rfc4514_string()} or its issuer is outside its validity "
                f"period ({trust.not_before:%Y-%m-%d} .. {trust.not_after:%Y-%m-%d})")
        return trust.certificate, trust.public_key

    def _trust(self, der: bytes) -> _Trust:
        try:
            certificate = x509.load_der_x509_certificate(der)
            public_key = certificate.public_key()
            subject = certificate.subject.rfc4514_string()
        except (ValueError, UnsupportedAlgorithm) as error:
            raise SignatureVerificationFault(f"X509Certificate is not a usable certificate: {error}") from None
        chain = [certificate]
        if der not in self._pinned:
            issuer = self._issuer(certificate)
            if issuer is None:
                raise SignatureVerificationFault(f"certificate {subject} is neither pinned nor issued by a trusted CA")
            chain.append(issuer)
        check_key_usage(certificate, subject)
        return _Trust(certificate=certificate, public_key=public_key,
                      not_before=max(c.not_valid_before_utc for c in chain),
                      not_after=min(c.not_valid_after_utc for c in chain))

    def _issuer(self, certificate: x509.Certificate) -> x509.Certificate | None:
        for authority in self._authorities:
            if authority.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(authority)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return authority
        return None


@dataclass(frozen=True)
class _Trust:
    """A certificate found trustworthy, with the window in which it and its issuer are valid."""

    certificate: x509.Certificate
    public_key: PublicKeyTypes
    not_before: datetime
    not_after: datetime


def check_key_usage(certificate: x509.Certificate, subject: str) -> None:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    except ValueError as error:
        raise SignatureVerificationFault(f"certificate {subject} has malformed extensions: {error}") from None
    if not (usage.digital_signature or usage.content_commitment):
        raise SignatureVerificationFault(f"certificate {subject} is not for signatures")


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False
