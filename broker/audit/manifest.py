"""An archive's manifest: what it holds, signed detached with ejx's key, linked to the archive before it.

The signature is plain ECDSA P-256 / SHA-256 (DER) or RSA PKCS#1 v1.5 / SHA-256
over the manifest's exact bytes, not XML-DSig: an auditor can check it with
nothing but OpenSSL and ejx's certificate (``openssl dgst -sha256 -verify
<(openssl x509 -pubkey -noout -in ejx.crt) -signature manifest.sig
manifest.json``). The SHA-256 of those bytes is the archive's identity, the one
its successor names, so manifests chain the archives as record hashes chain the
records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from broker.audit.chain import GENESIS, utc_text
from broker.domain.faults import Failure
from broker.xml.signing import keys

FORMAT = "ejx-message-log-archive/1"
ECDSA_P256_SHA256, RSA_PKCS1V15_SHA256 = "ecdsa-p256-sha256", "rsa-pkcs1v15-sha256"
_HASHES = ("anchor_hash", "last_record_hash", "records_sha256")
_TIMES = ("created_at", "first_recorded_at", "last_recorded_at")


@dataclass(frozen=True)
class Manifest:
    """The fields of ``manifest.json``; hashes are hex and times UTC "Z" in the file."""

    number: int
    """1 for the first archive, then one more per archive."""
    created_at: datetime
    first_sequence: int
    last_sequence: int
    records: int
    anchor_hash: bytes
    """The first record's previous hash: the last record hash of archive ``number - 1``."""
    last_record_hash: bytes
    first_recorded_at: datetime
    last_recorded_at: datetime
    records_sha256: bytes
    """Of ``records.jsonl``, byte for byte."""
    previous_archive: bytes | None
    """SHA-256 of the previous archive's ``manifest.json``; None for number 1."""
    signer_certificate_sha256: str
    """Fingerprint of the certificate to verify with (a hint: trust comes from the verifier's own copy)."""
    signature_algorithm: str

    def to_json(self) -> bytes:
        fields = asdict(self)
        for name in _HASHES:
            fields[name] = fields[name].hex()
        for name in _TIMES:
            fields[name] = utc_text(fields[name])
        fields["previous_archive"] = self.previous_archive.hex() if self.previous_archive else None
        return json.dumps({"format": FORMAT, **fields}, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse ``manifest.json``; ValueError (or KeyError, TypeError) if it is not one."""
        fields = orjson.loads(data)  # refuses nesting past 1,024 levels with a ValueError
        if not isinstance(fields, dict) or fields.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        for name in _HASHES:
            fields[name] = bytes.fromhex(fields[name])
        for name in _TIMES:
            fields[name] = parse_time(fields[name])
        if fields["previous_archive"] is not None:
            fields["previous_archive"] = bytes.fromhex(fields["previous_archive"])
        return cls(**fields)


@dataclass(frozen=True)
class ArchiveSummary:
    """One archive file: its name, its manifest and the manifest's SHA-256 (the archive's identity)."""

    name: str
    manifest: Manifest
    manifest_sha256: bytes


class ManifestSigner:
    """ejx's key and certificate signing manifests; the key is checked against the certificate once."""

    def __init__(self, private_key: PrivateKeyTypes, certificate: x509.Certificate) -> None:
        if _spki(private_key.public_key()) != _spki(certificate.public_key()):
            raise Failure("archive signing key does not match the certificate")
        if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
            self.algorithm = ECDSA_P256_SHA256
        elif isinstance(private_key, rsa.RSAPrivateKey):
            self.algorithm = RSA_PKCS1V15_SHA256
        else:
            raise Failure(f"archives are signed with P-256 or RSA keys, not {type(private_key).__name__}")
        self._key = private_key
        self.certificate_sha256 = certificate.fingerprint(hashes.SHA256()).hex()

    @classmethod
    def from_pem_files(cls, key_file: Path, cert_file: Path) -> ManifestSigner:
        return cls(keys.load_private_key(key_file), keys.load_certificates(cert_file)[0])

    def sign(self, data: bytes) -> bytes:
        if self.algorithm == ECDSA_P256_SHA256:
            return self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def signature_fault(manifest: Manifest, data: bytes, signature: bytes,
                    trusted: dict[str, x509.Certificate]) -> str | None:
    """Why the manifest's signature cannot be accepted, or None; ``trusted`` is keyed by SHA-256 fingerprint."""
    certificate = trusted.get(manifest.signer_certificate_sha256)
    if certificate is None:
        return "manifest is signed by a certificate that is not trusted here"
    public = certificate.public_key()
    try:
        if manifest.signature_algorithm == ECDSA_P256_SHA256 and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif manifest.signature_algorithm == RSA_PKCS1V15_SHA256 and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return f"signature algorithm {manifest.signature_algorithm!r} does not fit the certificate's key"
    except InvalidSignature:
        return "manifest signature does not verify with the certificate: the manifest was altered or forged"
    if not certificate.not_valid_before_utc <= manifest.created_at <= certificate.not_valid_after_utc:
        return "manifest was signed outside the certificate's validity period"
    return None


def link_fault(previous: ArchiveSummary | None, current: ArchiveSummary) -> str | None:
    """Why ``current`` does not continue ``previous`` (or, given first as number 1, start the chain)."""
    this = current.manifest
    if previous is None:
        if this.number == 1 and (this.previous_archive is not None or this.anchor_hash != GENESIS
                                 or this.first_sequence != 1):
            return "archive 1 must start the chain at record 1"
        return None
    before = previous.manifest
    if this.number != before.number + 1 or this.previous_archive != previous.manifest_sha256:
        return (f"archive {this.number} does not follow archive {before.number} ({previous.name}): "
                "archives out of order, or one is missing")
    if this.first_sequence != before.last_sequence + 1 or this.anchor_hash != before.last_record_hash:
        return f"does not continue the chain where archive {before.number} ends (record {before.last_sequence})"
    return None


def parse_time(text: object) -> datetime:
    """A time as written by :func:`~broker.audit.chain.utc_text`; ValueError otherwise."""
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"{text!r} is not a UTC time")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
