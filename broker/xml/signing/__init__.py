"""XML signatures of envelopes behind one small interface.

A :class:`Signer` signs ``SenderProvidedData`` by its ``Id`` and puts the
``ds:Signature`` into ``CallerInformationSystemSignature``; a :class:`Verifier`
checks one and hands back only what the signature covers. Algorithms are
looked up by their XML-DSig URI in :data:`SIGNATURE_METHODS`, so GOST R
34.10-2012 (with the SMEV transform) can join as one more entry without any
caller knowing.

Signing and verification are written directly on lxml's exclusive c14n and
``cryptography`` rather than on a general XML-DSig library: the envelope admits
exactly one signature shape, so a general processor's flexibility buys nothing
here but attack surface (wrapping) and time (about 3x per signature). signxml
and xmlsec1 remain the independent cross-checks in the tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
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

log = structlog.get_logger(__name__)

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED_SIGNATURE = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"

# The one transform chain of a Reference: the enveloped transform is the
# identity here (the signature is never inside SenderProvidedData) but is
# declared, as SMEV does, so generic verifiers agree.
TRANSFORMS = (ENVELOPED_SIGNATURE, EXC_C14N)
DIGEST_METHODS = {SHA256: hashlib.sha256}

_DS = f"{{{DS_NS}}}"
SIGNATURE = f"{_DS}Signature"


class SignatureMethod(Protocol):
    """One XML-DSig SignatureMethod: its URI, the keys it fits, and raw sign/verify of SignedInfo bytes."""

    uri: str

    def fits(self, key: PublicKeyTypes) -> bool:
        """Whether ``key`` is of the kind and size this method uses."""

    def sign(self, key: PrivateKeyTypes, data: bytes) -> bytes:
        """The SignatureValue bytes over ``data`` (canonical SignedInfo)."""

    def verify(self, key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is a valid SignatureValue over ``data``."""


class RsaSha256:
    """RSASSA-PKCS1-v1_5 with SHA-256, keys of at least 2048 bits."""

    uri = RSA_SHA256
    min_bits = 2048
    _padding, _hash = padding.PKCS1v15(), hashes.SHA256()

    def fits(self, key: PublicKeyTypes) -> bool:
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= self.min_bits

    def sign(self, key: PrivateKeyTypes, data: bytes) -> bytes:
        return key.sign(data, self._padding, self._hash)

    def verify(self, key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
        try:
            key.verify(signature, data, self._padding, self._hash)
        except InvalidSignature:
            return False
        return True


class EcdsaP256Sha256:
    """ECDSA on P-256 with SHA-256; the value is r||s, 32 bytes each (XML-DSig, RFC 4050), not DER."""

    uri = ECDSA_SHA256
    size = 32
    _ecdsa = ec.ECDSA(hashes.SHA256())

    def fits(self, key: PublicKeyTypes) -> bool:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)

    def sign(self, key: PrivateKeyTypes, data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, self._ecdsa))
        return r.to_bytes(self.size, "big") + s.to_bytes(self.size, "big")

    def verify(self, key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
        if len(signature) != 2 * self.size:
            return False
        r = int.from_bytes(signature[:self.size], "big")
        s = int.from_bytes(signature[self.size:], "big")
        try:
            key.verify(encode_dss_signature(r, s), data, self._ecdsa)
        except InvalidSignature:
            return False
        return True


SIGNATURE_METHODS: dict[str, SignatureMethod] = {m.uri: m for m in (RsaSha256(), EcdsaP256Sha256())}


class Signer(Protocol):
    """Signs an envelope's SenderProvidedData in place and returns the envelope."""

    def sign(self, envelope: etree._Element) -> etree._Element: ...


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


class XmlDsigSigner:
    """Enveloped XML-DSig (exclusive c14n, SHA-256, X.509 in KeyInfo) with a key loaded once.

    The ds:Signature is a deep copy of a template parsed once, and its canonical
    SignedInfo is assembled from pieces cut out of the template's own c14n: per
    signature the only XML work is one c14n of SenderProvidedData.
    """

    def __init__(self, private_key: PrivateKeyTypes, certificate: x509.Certificate) -> None:
        public = certificate.public_key()
        if _spki(private_key.public_key()) != _spki(public):
            raise Failure("signing key does not match the signing certificate")
        method = next((m for m in SIGNATURE_METHODS.values() if m.fits(public)), None)
        if method is None:
            raise Failure(f"no signature method for a {type(public).__name__} key")
        self._key = private_key
        self._method = method
        self.certificate = certificate
        cert_b64 = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()
        self._template = etree.fromstring(
            f'<ds:Signature xmlns:ds="{DS_NS}"><ds:SignedInfo>'
            f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/>'
            f'<ds:SignatureMethod Algorithm="{method.uri}"/>'
            f'<ds:Reference URI="#{_ID_SLOT}"><ds:Transforms>'
            + "".join(f'<ds:Transform Algorithm="{t}"/>' for t in TRANSFORMS)
            + f'</ds:Transforms><ds:DigestMethod Algorithm="{SHA256}"/>'
            f'<ds:DigestValue>{_DIGEST_SLOT}</ds:DigestValue></ds:Reference></ds:SignedInfo>'
            f'<ds:SignatureValue/><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_b64}'
            f'</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>', _OWN_MARKUP)
        # Canonical SignedInfo = head + Id + middle + digest + tail: exclusive c14n of the template
        # itself, cut at the slots, so signing needs no canonicalisation of its own markup.
        head, rest = _c14n(self._template[0]).split(_ID_SLOT.encode())
        self._canonical_parts = (head, *rest.split(_DIGEST_SLOT.encode()))
        log.debug("signing.signer_ready", method=method.uri, subject=certificate.subject.rfc4514_string(),
                  sha256=certificate.fingerprint(hashes.SHA256()).hex())

    @classmethod
    def from_pem_files(cls, key_file: Path, cert_file: Path, *, password: bytes | None = None) -> XmlDsigSigner:
        """A signer from a PEM key and the first certificate of a PEM file."""
        return cls(keys.load_private_key(key_file, password=password), keys.load_certificates(cert_file)[0])

    @property
    def method(self) -> str:
        """The SignatureMethod URI this signer writes."""
        return self._method.uri

    def sign(self, envelope: etree._Element) -> etree._Element:
        """Sign SenderProvidedData by ``#Id`` and insert ds:Signature; an envelope is signed once."""
        data = _signed_block(envelope, fault=InvalidContent)
        container = envelope.find(SIGNATURE_CONTAINER)
        if container is None:
            container = etree.SubElement(envelope, SIGNATURE_CONTAINER)
        elif len(container):
            raise InvalidContent("envelope is already signed")
        ref_id = data.get("Id")
        digest = base64.b64encode(hashlib.sha256(_c14n(data)).digest())
        head, middle, tail = self._canonical_parts
        value = self._method.sign(self._key, b"".join((head, ref_id.encode(), middle, digest, tail)))
        signature = self._template.__deepcopy__(None)  # lxml's own subtree copy, without copy's memo
        reference = signature[0][2]
        reference.set("URI", f"#{ref_id}")
        reference[2].text = digest.decode()
        signature[1].text = base64.b64encode(value).decode()
        container.append(signature)
        return envelope


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

    _cache_limit = 1024

    def __init__(self, trusted: Iterable[x509.Certificate], *, options: VerifierOptions = VerifierOptions()) -> None:
        trusted = list(trusted)
        if not trusted:
            raise Failure("a verifier needs at least one trusted certificate")
        unknown = options.signature_methods - SIGNATURE_METHODS.keys()
        if unknown:
            raise Failure(f"unknown signature methods: {sorted(unknown)}")
        self._options = options
        self._pinned = {c.public_bytes(serialization.Encoding.DER) for c in trusted}
        self._authorities = [c for c in trusted if _is_ca(c)]
        self._trust_cache: dict[bytes, _Trust] = {}
        log.debug("signing.verifier_ready", pinned=len(self._pinned), authorities=len(self._authorities),
                  methods=sorted(options.signature_methods))

    @classmethod
    def from_pem_files(cls, paths: Iterable[Path], *, options: VerifierOptions = VerifierOptions()) -> Verifier:
        """A verifier trusting every certificate in the PEM files (single certificates or bundles)."""
        return cls([c for path in paths for c in keys.load_certificates(path)], options=options)

    def verify(self, envelope: etree._Element) -> VerifiedEnvelope:
        """Check the one signature over SenderProvidedData; every failure is a SignatureVerificationFault."""
        data = _signed_block(envelope, fault=SignatureVerificationFault)
        ref_id = data.get("Id")
        signature = _the_signature(envelope)
        signed_info, value_el, key_info = _children(signature, ("SignedInfo", "SignatureValue", "KeyInfo"))
        c14n_method, sig_method, reference = _children(
            signed_info, ("CanonicalizationMethod", "SignatureMethod", "Reference"))
        _expect_algorithm(c14n_method, {EXC_C14N}, "CanonicalizationMethod")
        method = SIGNATURE_METHODS[_expect_algorithm(sig_method, self._options.signature_methods, "SignatureMethod")]
        if reference.get("URI") != f"#{ref_id}":
            raise SignatureVerificationFault(
                f"Reference URI {reference.get('URI')!r} does not point at this envelope's "
                f"SenderProvidedData (#{ref_id})")
        transforms, digest_method, digest_value = _children(reference, ("Transforms", "DigestMethod", "DigestValue"))
        steps = list(transforms.iterchildren(tag=etree.Element))
        found = tuple(_expect_algorithm(t, set(TRANSFORMS), "Transform")
                      for t in _children(transforms, ("Transform",) * len(steps)))
        if found != TRANSFORMS:
            raise SignatureVerificationFault(f"Reference transforms must be {list(TRANSFORMS)}, got {list(found)}")
        digester = DIGEST_METHODS[_expect_algorithm(digest_method, DIGEST_METHODS.keys(), "DigestMethod")]
        (x509_data,) = _children(key_info, ("X509Data",))
        (cert_el,) = _children(x509_data, ("X509Certificate",))
        certificate, public_key = self._trusted(_base64(cert_el, "X509Certificate"))
        if not method.fits(public_key):
            raise SignatureVerificationFault(f"{method.uri} does not fit the certificate's "
                                             f"{type(public_key).__name__}")

        signed_bytes = _c14n(data)
        if not hmac.compare_digest(digester(signed_bytes).digest(), _base64(digest_value, "DigestValue")):
            raise SignatureVerificationFault("digest of SenderProvidedData does not match: content was altered")
        if not method.verify(public_key, _base64(value_el, "SignatureValue"), _c14n(signed_info)):
            raise SignatureVerificationFault("SignatureValue does not verify with the certificate's key")

        signed_data = hardened.parse(signed_bytes)
        header, content = read_envelope(signed_data)
        return VerifiedEnvelope(header=header, content=content, signed_data=signed_data,
                                certificate=certificate, signature_method=method.uri)

    def _trusted(self, der: bytes) -> tuple[x509.Certificate, PublicKeyTypes]:
        """The certificate and its key if trusted now; trust verdicts are cached, the clock is read each time."""
        trust = self._trust_cache.get(der)
        if trust is None:
            trust = self._trust(der)
            if len(self._trust_cache) >= self._cache_limit:
                self._trust_cache.clear()
            self._trust_cache[der] = trust
        if self._options.check_validity_period and not trust.not_before <= datetime.now(UTC) <= trust.not_after:
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
        _check_key_usage(certificate, subject)
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


# Parses only markup this module writes itself (constant text and base64).
_OWN_MARKUP = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

# Wrapping needs a second node the Id could resolve to; no attribute but SenderProvidedData/@Id may carry it.
_ATTRIBUTES_EQUAL_TO = etree.XPath("//@*[. = $value]")
_NCNAME = re.compile(r"[A-Za-z_][\w.\-]*", re.ASCII)
_ID_SLOT, _DIGEST_SLOT = "ejx-id-slot", "ejx-digest-slot"


def _c14n(element: etree._Element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)


def _signed_block(envelope: etree._Element, *, fault: type[InvalidContent | SignatureVerificationFault]
                  ) -> etree._Element:
    """The envelope's own SenderProvidedData, refusing every shape that lets a signature cover something else."""
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


def _children(parent: etree._Element, names: tuple[str, ...]) -> list[etree._Element]:
    """The element children of ``parent``, which must be exactly ``names`` in the ds namespace, in order."""
    children = list(parent.iterchildren(tag=etree.Element))
    if [c.tag for c in children] != [_DS + n for n in names]:
        got = [etree.QName(c).localname if etree.QName(c).namespace == DS_NS else c.tag for c in children]
        raise SignatureVerificationFault(f"ds:{etree.QName(parent).localname} must contain {list(names)}, got {got}")
    return children


def _expect_algorithm(element: etree._Element, allowed: Iterable[str], what: str) -> str:
    algorithm = element.get("Algorithm")
    if algorithm not in allowed:
        raise SignatureVerificationFault(f"{what} {algorithm!r} is not accepted")
    if len(element):
        raise SignatureVerificationFault(f"{what} parameters are not accepted")
    return algorithm


def _base64(element: etree._Element, what: str) -> bytes:
    try:
        return base64.b64decode("".join((element.text or "").split()), validate=True)
    except binascii.Error:
        raise SignatureVerificationFault(f"{what} is not base64") from None


def _check_key_usage(certificate: x509.Certificate, subject: str) -> None:
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


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
