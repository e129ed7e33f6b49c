"""Signing of envelopes: SenderProvidedData by its Id, the ds:Signature into CallerInformationSystemSignature.

The key fixes the signature method, and the method fixes the Reference's
digest and transform chain (see :mod:`broker.xml.signing.algorithms`). All
the markup of a signature is prepared once per signer, because a broker
signs every outgoing envelope and the per-message cost is what counts.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Protocol

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)
from lxml import etree

from broker.domain.faults import Failure, InvalidContent
from broker.xml import hardened
from broker.xml.envelope import SIGNATURE_CONTAINER, SIGNED_DATA_ID
from broker.xml.signing import keys
from broker.xml.signing.algorithms import (
    DIGEST_METHODS,
    DS_NS,
    EXC_C14N,
    SIGNATURE_METHODS,
    canonical_reference_octets,
    exclusive_c14n,
    reference_octets,
)
from broker.xml.signing.verifier import signed_block

log = structlog.get_logger(__name__)

_ID_SLOT, _DIGEST_SLOT, _VALUE_SLOT = "ejx-id-slot", "ejx-digest-slot", "ejx-value-slot"


class Signer(Protocol):
    """Signs an envelope's SenderProvidedData: a tree in place, or :func:`~broker.xml.envelope.signed_block`'s
    octets."""

    def sign(self, envelope: etree._Element) -> etree._Element: ...

    def signature(self, block: bytes) -> bytes: ...


class XmlDsigSigner:
    """Enveloped XML-DSig (exclusive c14n, X.509 in KeyInfo) with a key loaded once.

    The ds:Signature is a deep copy of a template parsed once, and its canonical
    SignedInfo is assembled from pieces cut out of the template's own c14n: per
    signature the only XML work is the Reference's transforms over SenderProvidedData.
    :meth:`signature` does no XML work at all: the block is canonical already, and
    the ds:Signature is written from pieces of the template's c14n too.
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
        self._digest = DIGEST_METHODS[method.digest_method]
        self.certificate = certificate
        cert_b64 = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()
        self._template = hardened.parse_trusted((  # markup written right here: constant text and base64
            f'<ds:Signature xmlns:ds="{DS_NS}"><ds:SignedInfo>'
            f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/>'
            f'<ds:SignatureMethod Algorithm="{method.uri}"/>'
            f'<ds:Reference URI="#{_ID_SLOT}"><ds:Transforms>'
            + "".join(f'<ds:Transform Algorithm="{t}"/>' for t in method.transforms)
            + f'</ds:Transforms><ds:DigestMethod Algorithm="{method.digest_method}"/>'
            f'<ds:DigestValue>{_DIGEST_SLOT}</ds:DigestValue></ds:Reference></ds:SignedInfo>'
            f'<ds:SignatureValue>{_VALUE_SLOT}</ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_b64}'
            f'</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>').encode())
        # Canonical SignedInfo = head + Id + middle + digest + tail, and the canonical ds:Signature likewise
        # with the value: exclusive c14n of the template itself, cut at the slots, so signing needs no
        # canonicalisation of its own markup.
        self._canonical_parts = _cut(exclusive_c14n(self._template[0]), _ID_SLOT, _DIGEST_SLOT)
        self._signature_parts = _cut(exclusive_c14n(self._template), _ID_SLOT, _DIGEST_SLOT, _VALUE_SLOT)
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
        data = signed_block(envelope, fault=InvalidContent)
        container = envelope.find(SIGNATURE_CONTAINER)
        if container is None:
            container = etree.SubElement(envelope, SIGNATURE_CONTAINER)
        elif len(container):
            raise InvalidContent("envelope is already signed")
        ref_id = data.get("Id")
        digest, value = self._signed(ref_id, reference_octets(data, self._method.transforms))
        signature = self._template.__deepcopy__(None)  # lxml's own subtree copy, without copy's memo
        reference = signature[0][2]
        reference.set("URI", f"#{ref_id}")
        reference[2].text = digest.decode()
        signature[1].text = value.decode()
        container.append(signature)
        return envelope

    def signature(self, block: bytes) -> bytes:
        """The ds:Signature, in exclusive c14n, over the octets of a :func:`~broker.xml.envelope.signed_block`."""
        digest, value = self._signed(SIGNED_DATA_ID, canonical_reference_octets(block, self._method.transforms))
        head, middle, before_value, tail = self._signature_parts
        return b"".join((head, SIGNED_DATA_ID.encode(), middle, digest, before_value, value, tail))

    def _signed(self, ref_id: str, octets: bytes) -> tuple[bytes, bytes]:
        """DigestValue and SignatureValue (both base64) of a Reference to ``#ref_id`` over ``octets``."""
        digest = base64.b64encode(self._digest(octets))
        head, middle, tail = self._canonical_parts
        return digest, base64.b64encode(self._method.sign(self._key, b"".join((head, ref_id.encode(), middle,
                                                                                 digest, tail))))


def _cut(octets: bytes, *slots: str) -> tuple[bytes, ...]:
    """``octets`` split at each slot in turn: the constant pieces around the values of one signature."""
    pieces = []
    for slot in slots:
        piece, octets = octets.split(slot.encode())
        pieces.append(piece)
    return (*pieces, octets)


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
