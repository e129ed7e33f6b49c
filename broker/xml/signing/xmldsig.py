"""Detached XML-DSig by Id, as SMEV 3 uses it: one Reference ``URI="#Id"`` per ds:Signature.

SMEV 3 messages carry several signatures side by side: the sender's over
``SenderProvidedRequestData``, SMEV's over ``Request``, the caller's over a
``MessageTypeSelector`` or ``AckTargetMessage``, personal ones over content.
Each points at its element by Id from a slot elsewhere in the document, so
here the caller decides where a signature goes and which one it expects;
this module signs and checks standard XML-DSig and nothing more.

Verification is the standard one (SignedInfo canonicalized as it stands, so
independent signers interoperate) plus the shape rules that stop wrapping:
the Id must be held by exactly one element of the document, that element
must not contain its own signature or sit inside any ds:Signature, and the
caller is handed that very element. Whether the signer is trusted is the
caller's decision (registered participants, a trust store): what comes back
is the certificate, checked only for its validity period at a given moment.

The algorithm follows the key (RSA, ECDSA P-256 or GOST R 34.10-2012), and
with it the digest and the transform chain (see :mod:`.algorithms`). All
work is CPU-bound and holds no shared mutable state, so callers may run it
in worker threads.
"""

from __future__ import annotations

import base64
import functools
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from lxml import etree

from broker.domain.faults import Failure, InvalidContent, SignatureVerificationFault
from broker.xml.signing import gost, keys
from broker.xml.signing.algorithms import (
    DIGEST_METHODS,
    DS_NS,
    ENVELOPED_SIGNATURE,
    EXC_C14N,
    GOST_2012_256,
    SIGNATURE_METHODS,
    SMEV_TRANSFORM,
    STREEBOG_256,
    SignatureMethod,
    exclusive_c14n,
    reference_octets,
)
from broker.xml.signing.trust import check_key_usage
from broker.xml.signing.verifier import (
    _NCNAME,
    SIGNATURE,
    base64_value,
    ds_children,
    expect_algorithm,
)

__all__ = ["GOST_2012_256", "REFERENCE_CHAINS", "STREEBOG_256", "SigningKey", "VerifiedSignature",
           "find_signatures", "sign_reference", "verify_reference"]

REFERENCE_CHAINS = frozenset({
    (EXC_C14N,), (EXC_C14N, SMEV_TRANSFORM), (ENVELOPED_SIGNATURE, EXC_C14N),
    (ENVELOPED_SIGNATURE, EXC_C14N, SMEV_TRANSFORM)})
"""Reference transform chains accepted (and writable): every one ends in octets, and the enveloped
transform is the identity because a signature inside the element it covers is refused."""
_CHAIN_URIS = frozenset(uri for chain in REFERENCE_CHAINS for uri in chain)

_DS = f"{{{DS_NS}}}"
# Every attribute an XML-DSig implementation might resolve an Id reference through; all must agree.
_ID_HOLDERS = etree.XPath("//@*[(local-name() = 'Id' or local-name() = 'ID' or local-name() = 'id') "
                          "and . = $value]")


@dataclass(frozen=True, eq=False)
class SigningKey:
    """A private key and its certificate, read and matched once; the signature method follows the key."""

    algorithm: str
    """SignatureMethod URI: RSA-SHA256, ECDSA-P256-SHA256 or GOST R 34.10-2012 (256)."""
    certificate_der: bytes
    """The certificate written into every signature's KeyInfo."""
    subject: str
    """The certificate's subject (RFC 4514), for logs."""
    _private: object = field(repr=False)
    _method: SignatureMethod = field(repr=False)

    @classmethod
    def from_pem_files(cls, key_file: Path, cert_file: Path, *, password: bytes | None = None) -> SigningKey:
        """The key of a PEM file and the first certificate of another (a bundle may follow it)."""
        return cls.from_pem(keys.read_file(Path(key_file), "signing key"),
                            keys.read_file(Path(cert_file), "certificate file"), password=password)

    @classmethod
    def from_pem(cls, key_pem: bytes, cert_pem: bytes, *, password: bytes | None = None) -> SigningKey:
        """A key (PKCS#8 PEM) and its certificate (the first of ``cert_pem``); a mismatched pair is refused."""
        try:
            certificate = gost.GostCertificate.from_pem(cert_pem)
        except InvalidContent as error:
            raise Failure(f"signing certificate is not a usable PEM certificate: {error.description}") from None
        if certificate.is_gost:
            try:
                private: object = gost.GostPrivateKey.from_pem(key_pem, password)
            except InvalidContent as error:
                raise Failure(f"signing key is not the GOST key of {certificate.subject}: {error.description}"
                              ) from None
            method = SIGNATURE_METHODS[GOST_2012_256]
            probe = b"ejx: does this key belong to this certificate?"
            if not method.verify(certificate, method.sign(private, probe), probe):
                raise Failure(f"signing key does not match the certificate of {certificate.subject}")
        else:
            private = keys.load_private_key_pem(key_pem, password=password)
            public = certificate.x509.public_key()
            if _spki(private.public_key()) != _spki(public):
                raise Failure(f"signing key does not match the certificate of {certificate.subject}")
            method = next((m for m in SIGNATURE_METHODS.values() if m.fits(public)), None)
            if method is None:
                raise Failure(f"no signature method for a {type(public).__name__} key")
        return cls(method.uri, certificate.der, certificate.subject, private, method)


_BAD_BYTES = {"reason": "SignatureIsInvalid"}
"""The reason of a digest or SignatureValue that does not match: the signed bytes themselves are wrong."""


def sign_reference(target: etree._Element, key: SigningKey, *, transforms: Sequence[str] | None = None
                   ) -> etree._Element:
    """A new ds:Signature over ``target`` by its ``Id``, for the caller to place (it must not go inside target).

    ``transforms`` default to the key's method's chain (GOST: exc-c14n then the SMEV transform;
    RSA/ECDSA: enveloped-signature then exc-c14n); any chain of :data:`REFERENCE_CHAINS` may be
    asked for, e.g. the SMEV chain with an RSA key. SignedInfo is canonicalized with exc-c14n,
    which depends on nothing around ds:Signature, so the signature stays valid wherever it goes.
    """
    chain = tuple(key._method.transforms if transforms is None else transforms)
    if chain not in REFERENCE_CHAINS:
        raise ValueError(f"transform chain {list(chain)} is not one of {sorted(map(list, REFERENCE_CHAINS))}")
    ref_id = target.get("Id")
    if ref_id is None or not _NCNAME.fullmatch(ref_id):
        raise InvalidContent(f"the element to sign needs an Id that is an XML name, got {ref_id!r}")
    if len(_ID_HOLDERS(target, value=ref_id)) != 1:
        raise InvalidContent(f"Id {ref_id!r} is not unique in the document: its signature would not verify")
    digest = DIGEST_METHODS[key._method.digest_method](reference_octets(target, chain))

    signature = etree.Element(SIGNATURE, nsmap={"ds": DS_NS})
    signed_info = _sub(signature, "SignedInfo")
    _sub(signed_info, "CanonicalizationMethod", Algorithm=EXC_C14N)
    _sub(signed_info, "SignatureMethod", Algorithm=key.algorithm)
    reference = _sub(signed_info, "Reference", URI=f"#{ref_id}")
    steps = _sub(reference, "Transforms")
    for uri in chain:
        _sub(steps, "Transform", Algorithm=uri)
    _sub(reference, "DigestMethod", Algorithm=key._method.digest_method)
    _sub(reference, "DigestValue").text = base64.b64encode(digest).decode()
    value = key._method.sign(key._private, exclusive_c14n(signed_info))
    _sub(signature, "SignatureValue").text = base64.b64encode(value).decode()
    x509_data = _sub(_sub(signature, "KeyInfo"), "X509Data")
    _sub(x509_data, "X509Certificate").text = base64.b64encode(key.certificate_der).decode()
    return signature


@dataclass(frozen=True)
class VerifiedSignature:
    """One signature found valid: what it covers and who made it; trust in the signer is still to be decided."""

    signature: etree._Element
    """The ds:Signature element."""
    covered: etree._Element
    """The one element of the document its Reference points at: read the signed data from here only."""
    reference_id: str
    """The Id the Reference names (without ``#``)."""
    algorithm: str
    """SignatureMethod URI."""
    certificate_der: bytes
    """The signer's certificate from KeyInfo: match it against participants or a trust store."""
    subject: str
    serial_number: int
    not_before: datetime
    not_after: datetime


def verify_reference(signature: etree._Element, *, at: datetime | None = None) -> VerifiedSignature:
    """Check one ds:Signature inside its document; every failure is a SignatureVerificationFault.

    ``at`` (timezone-aware, default now) is when the certificate must have been valid: the
    signing time of an archived message whose certificate has since expired.
    """
    if at is not None and at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    if signature.tag != SIGNATURE:
        raise SignatureVerificationFault(f"expected ds:Signature, got {signature.tag}")
    signed_info, value_el, key_info = ds_children(signature, ("SignedInfo", "SignatureValue", "KeyInfo"))
    c14n_method, sig_method, reference = ds_children(
        signed_info, ("CanonicalizationMethod", "SignatureMethod", "Reference"))
    expect_algorithm(c14n_method, {EXC_C14N}, "CanonicalizationMethod")
    method = SIGNATURE_METHODS[expect_algorithm(sig_method, SIGNATURE_METHODS, "SignatureMethod")]
    steps, digest_method, digest_value = ds_children(reference, ("Transforms", "DigestMethod", "DigestValue"))
    count = sum(1 for _ in steps.iterchildren(tag=etree.Element))
    chain = tuple(expect_algorithm(t, _CHAIN_URIS, "Transform") for t in ds_children(steps, ("Transform",) * count))
    if chain not in REFERENCE_CHAINS:
        raise SignatureVerificationFault(f"Reference transform chain {list(chain)} is not accepted; use "
                                         f"{list((EXC_C14N, SMEV_TRANSFORM))}")
    expect_algorithm(digest_method, {method.digest_method}, f"DigestMethod (with {method.uri})")
    ref_id, covered = _covered(signature, reference.get("URI"))

    (x509_data,) = ds_children(key_info, ("X509Data",))
    (cert_el,) = ds_children(x509_data, ("X509Certificate",))
    der = base64_value(cert_el, "X509Certificate")
    certificate, public = _signer(der)
    if not method.fits(public):
        raise SignatureVerificationFault(f"SignatureMethod {method.uri} does not fit the certificate's "
                                         f"{'GOST' if certificate.is_gost else type(public).__name__} key")
    check_key_usage(certificate.x509, certificate.subject)

    digest = DIGEST_METHODS[method.digest_method](reference_octets(covered, chain))
    if not hmac.compare_digest(digest, base64_value(digest_value, "DigestValue")):
        raise SignatureVerificationFault(
            f"digest of {_name(covered)} Id={ref_id!r} does not match its DigestValue: the content was altered "
            f"after signing, or the signer computed it over other bytes (compare `ejx smev3 transform`)",
            details=_BAD_BYTES)
    if not method.verify(public, base64_value(value_el, "SignatureValue"), exclusive_c14n(signed_info)):
        raise SignatureVerificationFault(
            f"SignatureValue over SignedInfo (Reference #{ref_id}) does not verify with the key of "
            f"{certificate.subject}: SignedInfo was altered, or canonicalized differently when signed",
            details=_BAD_BYTES)
    moment = at or datetime.now(UTC)
    if not certificate.not_before <= moment <= certificate.not_after:
        raise SignatureVerificationFault(
            f"the signature over #{ref_id} matches, but certificate {certificate.subject} (serial "
            f"{certificate.serial_number:x}) is valid only {certificate.not_before:%Y-%m-%dT%H:%M:%SZ} .. "
            f"{certificate.not_after:%Y-%m-%dT%H:%M:%SZ}, not at {moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
            # SMEV's own code for it: a client watching for certificate rotation looks for it.
            details={"reason": "CertificateIsExpired"} if moment > certificate.not_after else None)
    return VerifiedSignature(signature=signature, covered=covered, reference_id=ref_id, algorithm=method.uri,
                             certificate_der=certificate.der, subject=certificate.subject,
                             serial_number=certificate.serial_number, not_before=certificate.not_before,
                             not_after=certificate.not_after)


def find_signatures(root: etree._Element) -> list[etree._Element]:
    """Every ds:Signature at or under ``root``, in document order."""
    return list(root.iter(SIGNATURE))


def _covered(signature: etree._Element, uri: str | None) -> tuple[str, etree._Element]:
    """The one element of the signature's document whose Id the Reference names, refusing wrapping shapes."""
    if uri is None or not uri.startswith("#") or not _NCNAME.fullmatch(uri[1:]):
        raise SignatureVerificationFault(
            f"Reference URI must be '#' and the Id of an element in the same document, got {uri!r}")
    ref_id = uri[1:]
    holders = _ID_HOLDERS(signature, value=ref_id)
    if not holders:
        raise SignatureVerificationFault(f"Reference #{ref_id}: no element of this document has that Id")
    if len(holders) != 1:
        raise SignatureVerificationFault(f"Reference #{ref_id}: {len(holders)} attributes of this document "
                                         f"carry that Id; it must be unique")
    if holders[0].attrname != "Id":
        raise SignatureVerificationFault(f"Reference #{ref_id} names a {holders[0].attrname!r} attribute; "
                                         f"SMEV 3 elements are referenced by their unqualified Id")
    covered = holders[0].getparent()
    if any(node is covered for node in signature.iterancestors()):
        raise SignatureVerificationFault(f"the signature over #{ref_id} sits inside the element it covers")
    if next(covered.iterancestors(SIGNATURE), None) is not None or covered.tag.startswith(_DS):
        raise SignatureVerificationFault(f"Reference #{ref_id} points into a ds:Signature: refused as wrapping")
    return ref_id, covered


MAX_CERTIFICATE_BYTES = 16 * 1024
"""Qualified GOST certificates are 1.5–4 KB; the bound keeps what anyone can send (and the cache below
holds, before trust is checked) small."""


@functools.lru_cache(maxsize=256)
def _certificate(der: bytes) -> gost.GostCertificate:
    """Certificates parsed once: a peer signs every message with the same one."""
    return gost.GostCertificate.from_der(der)


def _signer(der: bytes) -> tuple[gost.GostCertificate, object]:
    """The certificate and the key that verifies with it; an unusable one is the signature's fault."""
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise SignatureVerificationFault(f"X509Certificate is {len(der)} bytes; a signer's certificate is at most "
                                         f"{MAX_CERTIFICATE_BYTES}")
    try:
        certificate = _certificate(der)
        return certificate, certificate if certificate.is_gost else certificate.x509.public_key()
    except (InvalidContent, ValueError, UnsupportedAlgorithm) as error:
        description = getattr(error, "description", str(error))
        raise SignatureVerificationFault(f"X509Certificate is not a usable certificate: {description}") from None


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _sub(parent: etree._Element, name: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, _DS + name, attributes)


def _name(element: etree._Element) -> str:
    return etree.QName(element).localname
