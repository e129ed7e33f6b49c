"""Verification of an envelope's one signature, and the shape rules that stop signature wrapping.

Wrapping attacks make a valid signature cover one node while the reader reads
another. They are refused by shape before any cryptography: exactly one
SenderProvidedData, the Envelope's first child, with an Id no other attribute
carries; exactly one ds:Signature, in CallerInformationSystemSignature right
after it; every ds element in its fixed place. What the caller gets back is
re-parsed from the very octets whose digest was checked, so nothing outside
the signature can reach it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from cryptography import x509
from lxml import etree

from broker.domain.faults import Failure, InvalidContent, SignatureVerificationFault
from broker.xml import hardened
from broker.xml.envelope import (
    ENVELOPE,
    SENDER_PROVIDED_DATA,
    SIGNATURE_CONTAINER,
    EnvelopeHeader,
    read_envelope,
)
from broker.xml.signing import keys
from broker.xml.signing.algorithms import (
    DIGEST_METHODS,
    DS_NS,
    EXC_C14N,
    SIGNATURE_METHODS,
    exclusive_c14n,
    reference_octets,
)
from broker.xml.signing.trust import TrustedCertificates

log = structlog.get_logger(__name__)

_DS = f"{{{DS_NS}}}"
SIGNATURE = f"{_DS}Signature"

# Wrapping needs a second node the Id could resolve to; no attribute but SenderProvidedData/@Id may carry it.
_ATTRIBUTES_EQUAL_TO = etree.XPath("//@*[. = $value]")
_NCNAME = re.compile(r"[A-Za-z_][\w.\-]*", re.ASCII)


@dataclass(frozen=True)
class VerifiedEnvelope:
    """What a valid signature covers, and nothing else.

    ``signed_data`` is re-parsed from the very bytes whose digest was checked,
    so ``header`` and ``content`` cannot come from anywhere the signature does
    not reach.
    """

    header: EnvelopeHeader
    content: etree._Element
    signed_data: etree._Element
    certificate: x509.Certificate
    signature_method: str


@dataclass(frozen=True)
class VerifierOptions:
    """What a verifier accepts beyond trust in the certificate."""

    signature_methods: frozenset[str] = field(default_factory=lambda: frozenset(SIGNATURE_METHODS))
    """SignatureMethod URIs accepted; a roll-out can narrow this, nothing else widens it."""
    check_validity_period: bool = True
    """Refuse certificates (and issuing CAs) outside their notBefore..notAfter."""


class Verifier:
    """Checks envelope signatures against pinned certificates and CA certificates.

    A certificate in KeyInfo is only a hint: it must equal a pinned certificate,
    or be issued directly by one of the configured CA certificates (CA
    basic constraint set). Intermediates go into the configured bundle.
    """

    def __init__(self, trusted: Iterable[x509.Certificate], *, options: VerifierOptions = VerifierOptions()) -> None:
        trusted = list(trusted)
        if not trusted:
            raise Failure("a verifier needs at least one trusted certificate")
        unknown = options.signature_methods - SIGNATURE_METHODS.keys()
        if unknown:
            raise Failure(f"unknown signature methods: {sorted(unknown)}")
        self._options = options
        self._trust = TrustedCertificates(trusted, check_validity_period=options.check_validity_period)
        log.debug("signing.verifier_ready", pinned=self._trust.pinned, authorities=self._trust.authorities,
                  methods=sorted(options.signature_methods))

    @classmethod
    def from_pem_files(cls, paths: Iterable[Path], *, options: VerifierOptions = VerifierOptions()) -> Verifier:
        """A verifier trusting every certificate in the PEM files (single certificates or bundles)."""
        return cls([c for path in paths for c in keys.load_certificates(path)], options=options)

    def verify(self, envelope: etree._Element) -> VerifiedEnvelope:
        """Check the one signature over SenderProvidedData; every failure is a SignatureVerificationFault."""
        data = signed_block(envelope, fault=SignatureVerificationFault)
        ref_id = data.get("Id")
        signature = _the_signature(envelope)
        signed_info, value_el, key_info = ds_children(signature, ("SignedInfo", "SignatureValue", "KeyInfo"))
        c14n_method, sig_method, reference = ds_children(
            signed_info, ("CanonicalizationMethod", "SignatureMethod", "Reference"))
        expect_algorithm(c14n_method, {EXC_C14N}, "CanonicalizationMethod")
        method = SIGNATURE_METHODS[expect_algorithm(sig_method, self._options.signature_methods, "SignatureMethod")]
        if reference.get("URI") != f"#{ref_id}":
            raise SignatureVerificationFault(
                f"Reference URI {reference.get('URI')!r} does not point at this envelope's "
                f"SenderProvidedData (#{ref_id})")
        transforms, digest_method, digest_value = ds_children(reference, ("Transforms", "DigestMethod", "DigestValue"))
        steps = list(transforms.iterchildren(tag=etree.Element))
        found = tuple(expect_algorithm(t, set(method.transforms), "Transform")
                      for t in ds_children(transforms, ("Transform",) * len(steps)))
        if found != method.transforms:
            raise SignatureVerificationFault(
                f"Reference transforms must be {list(method.transforms)}, got {list(found)}")
        digester = DIGEST_METHODS[expect_algorithm(digest_method, {method.digest_method}, "DigestMethod")]
        (x509_data,) = ds_children(key_info, ("X509Data",))
        (cert_el,) = ds_children(x509_data, ("X509Certificate",))
        certificate, public_key = self._trust.check(base64_value(cert_el, "X509Certificate"))
        if not method.fits(public_key):
            raise SignatureVerificationFault(f"{method.uri} does not fit the certificate's "
                                             f"{type(public_key).__name__}")

        signed_bytes = reference_octets(data, method.transforms)
        if not hmac.compare_digest(digester(signed_bytes), base64_value(digest_value, "DigestValue")):
            raise SignatureVerificationFault("digest of SenderProvidedData does not match: content was altered")
        if not method.verify(public_key, base64_value(value_el, "SignatureValue"), exclusive_c14n(signed_info)):
            raise SignatureVerificationFault("SignatureValue does not verify with the certificate's key")

        signed_data = hardened.parse(signed_bytes)
        header, content = read_envelope(signed_data)
        return VerifiedEnvelope(header=header, content=content, signed_data=signed_data,
                                certificate=certificate, signature_method=method.uri)


def signed_block(envelope: etree._Element, *, fault: type[InvalidContent | SignatureVerificationFault]
                 ) -> etree._Element:
    """The envelope's own SenderProvidedData, refusing every shape that lets a signature cover something else.

    The signer calls it too (with ``InvalidContent``): ejx never signs what it would refuse to verify.
    """
    if envelope.tag != ENVELOPE:
        raise fault(f"root element is {envelope.tag}, expected {ENVELOPE}")
    blocks = list(envelope.iter(SENDER_PROVIDED_DATA))
    if len(blocks) != 1:
        raise fault(f"the document must hold exactly one SenderProvidedData, found {len(blocks)}")
    data = blocks[0]
    if data.getparent() is not envelope or next(envelope.iterchildren(tag=etree.Element)) is not data:
        raise fault("SenderProvidedData must be the Envelope's first child")
    ref_id = data.get("Id")
    if ref_id is None or not _NCNAME.fullmatch(ref_id):
        raise fault(f"SenderProvidedData needs an Id that is an XML name, got {ref_id!r}")
    holders = _ATTRIBUTES_EQUAL_TO(envelope, value=ref_id)
    if len(holders) != 1:
        raise fault(f"Id {ref_id!r} must occur once in the document, found {len(holders)} attributes carrying it")
    return data


def _the_signature(envelope: etree._Element) -> etree._Element:
    signatures = list(envelope.iter(SIGNATURE))
    if len(signatures) != 1:
        raise SignatureVerificationFault(f"the document must hold exactly one ds:Signature, found {len(signatures)}")
    signature = signatures[0]
    container = signature.getparent()
    if container.tag != SIGNATURE_CONTAINER or container.getparent() is not envelope:
        raise SignatureVerificationFault("ds:Signature must sit in the Envelope's CallerInformationSystemSignature")
    if [c for c in envelope.iterchildren(tag=etree.Element)][1:] != [container] or \
            [c for c in container.iterchildren(tag=etree.Element)] != [signature]:
        raise SignatureVerificationFault("CallerInformationSystemSignature must follow SenderProvidedData and "
                                         "hold only the ds:Signature")
    return signature


def ds_children(parent: etree._Element, names: tuple[str, ...]) -> list[etree._Element]:
    """The element children of ``parent``, which must be exactly ``names`` in the ds namespace, in order."""
    children = list(parent.iterchildren(tag=etree.Element))
    if [c.tag for c in children] != [_DS + n for n in names]:
        got = [etree.QName(c).localname if etree.QName(c).namespace == DS_NS else c.tag for c in children]
        raise SignatureVerificationFault(f"ds:{etree.QName(parent).localname} must contain {list(names)}, got {got}")
    return children


def expect_algorithm(element: etree._Element, allowed: Iterable[str], what: str) -> str:
    algorithm = element.get("Algorithm")
    if algorithm not in allowed:
        raise SignatureVerificationFault(f"{what} {algorithm!r} is not accepted")
    if len(element):
        raise SignatureVerificationFault(f"{what} parameters are not accepted")
    return algorithm


def base64_value(element: etree._Element, what: str) -> bytes:
    try:
        return base64.b64decode("".join((element.text or "").split()), validate=True)
    except binascii.Error:
        raise SignatureVerificationFault(f"{what} is not base64") from None
