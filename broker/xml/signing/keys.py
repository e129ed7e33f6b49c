"""Signing keys and X.509 certificates: load PEM once, mint development pairs.

Production keys and certificates come from a CA (for GOST, an accredited one);
the self-signed pair minted here is for development, demos and tests only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from broker.domain.faults import Failure
from broker.xml.signing import gost

KEY_FILE = "ejx.key"
CERT_FILE = "ejx.crt"


class KeyAlgorithm(StrEnum):
    """Key kinds ejx can mint for development; production GOST keys come from an accredited CA."""

    ECDSA = "ecdsa"
    RSA = "rsa"
    GOST2012_256 = "gost2012-256"
    """GOST R 34.10-2012 (256), paramset A, through OpenSSL's gost engine: what SMEV 3 peers verify."""

    @property
    def is_gost(self) -> bool:
        """Whether keys of this kind live in the gost engine rather than in ``cryptography``."""
        return self is KeyAlgorithm.GOST2012_256


@dataclass(frozen=True)
class DevCertificateOptions:
    """What a development self-signed certificate says about itself."""

    common_name: str = "ejx development signer (NOT FOR PRODUCTION)"
    """Subject and issuer CN; says loudly that the pair is not a real one."""
    valid_days: int = 365
    """Validity from now; verifiers refuse certificates outside it."""


def generate_key(algorithm: KeyAlgorithm) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A fresh P-256 or RSA-2048 key, the sizes the XML-DSig methods here accept (GOST: see write_dev_pair)."""
    if algorithm.is_gost:
        raise ValueError("GOST keys are minted with their certificate: gost.generate_key_and_certificate")
    if algorithm is KeyAlgorithm.ECDSA:
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed_certificate(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *,
                            options: DevCertificateOptions = DevCertificateOptions(),
                            not_before: datetime | None = None) -> x509.Certificate:
    """A self-signed end-entity certificate for ``key``, usable only for signatures."""
    start = (not_before or datetime.now(UTC)) - timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, options.common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ejx")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=options.valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def write_dev_pair(directory: Path, *, algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA,
                   options: DevCertificateOptions = DevCertificateOptions()) -> tuple[Path, Path]:
    """Write ``ejx.key`` (mode 0600) and ``ejx.crt`` into ``directory``; never overwrite either."""
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    for path in (key_path, cert_path):
        if path.exists():
            raise Failure(f"{path} exists; refusing to overwrite a key or certificate")
    if algorithm.is_gost:
        key_pem, cert_pem = gost.generate_key_and_certificate(options.common_name, days=options.valid_days)
    else:
        key = generate_key(algorithm)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        cert_pem = self_signed_certificate(key, options=options).public_bytes(serialization.Encoding.PEM)
    directory.mkdir(parents=True, exist_ok=True)
    _write_new(key_path, key_pem, mode=0o600)
    _write_new(cert_path, cert_pem, mode=0o644)
    return key_path, cert_path


def load_private_key(path: Path, *, password: bytes | None = None) -> PrivateKeyTypes:
    """The PEM private key at ``path``; unreadable or malformed files become a Failure."""
    return load_private_key_pem(read_file(path, "signing key"), password=password, source=str(path))


def load_private_key_pem(data: bytes, *, password: bytes | None = None, source: str = "PEM data") -> PrivateKeyTypes:
    """An RSA or EC private key from PEM bytes (GOST keys: :class:`.gost.GostPrivateKey`)."""
    try:
        return serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise Failure(f"signing key {source} is not a usable PEM private key: {error}") from None


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every PEM certificate in ``path`` (one certificate or a bundle)."""
    data = read_file(path, "certificate file")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise Failure(f"{path} holds no usable PEM certificate: {error}") from None
    return certificates


def read_file(path: Path, what: str) -> bytes:
    """The bytes of a key or certificate file; unreadable files become a Failure naming ``what``."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise Failure(f"cannot read {what} {path}: {error.strerror or error}") from None


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    """Create ``path`` exclusively, so a concurrent writer cannot be clobbered."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise Failure(f"{path} exists; refusing to overwrite a key or certificate") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)
