"""The XML-DSig algorithms ejx signs and accepts, each looked up by its URI.

A signature method decides more than how SignedInfo is signed: it also names
the digest of the Reference and the Reference's transform chain, because the
national profile (GOST R 34.10-2012 with a Streebog digest and the SMEV
transform) differs from the W3C one in all three. Signer and verifier read
those from the method, so such a profile joins as one entry in
:data:`SIGNATURE_METHODS` (plus its digest and transform), and no caller
assumes SHA-256 or a fixed chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
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

from broker.domain.faults import SignatureVerificationFault
from broker.xml import smev_transform
from broker.xml.signing import gost

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED_SIGNATURE = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
GOST_2012_256 = gost.SIGNATURE_METHOD
STREEBOG_256 = gost.DIGEST_METHOD
SMEV_TRANSFORM = smev_transform.TRANSFORM_URI

# The transform chain of the W3C methods below: the enveloped transform is the
# identity here (the signature is never inside SenderProvidedData) but is
# declared, as SMEV does, so generic verifiers agree.
TRANSFORMS = (ENVELOPED_SIGNATURE, EXC_C14N)
# SMEV 3's chain, whatever the key: exc-c14n, then the SMEV transform.
SMEV_TRANSFORMS = (EXC_C14N, SMEV_TRANSFORM)

Digest = Callable[[bytes], bytes]
"""A DigestMethod: the octets in, the DigestValue bytes (before base64) out."""
DIGEST_METHODS: dict[str, Digest] = {SHA256: lambda data: hashlib.sha256(data).digest(),
                                     STREEBOG_256: gost.streebog256}

Transform = Callable[[etree._Element | bytes], etree._Element | bytes]
"""One Reference transform: the signed element or the octets so far, in; the next, out."""


def exclusive_c14n(element: etree._Element) -> bytes:
    """Exclusive XML canonicalisation without comments: the only c14n ejx writes or accepts."""
    try:
        return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)
    except etree.C14NError:  # libxml2 says no more than "C14N failed"; a relative namespace URI is the usual cause
        # What cannot be canonicalized cannot be signed or verified: the verifiers' one fault for it.
        raise SignatureVerificationFault(f"{etree.QName(element).localname} cannot be canonicalized (exclusive "
                                         "XML c14n): every namespace URI in it must be absolute") from None


def _enveloped(node: etree._Element | bytes) -> etree._Element | bytes:
    return node  # the signature lives outside what it signs: nothing to remove


def _exclusive_c14n(node: etree._Element | bytes) -> etree._Element | bytes:
    if isinstance(node, bytes):
        raise TypeError("exclusive c14n needs the element, not octets")
    return exclusive_c14n(node)


def _smev(node: etree._Element | bytes) -> etree._Element | bytes:
    if isinstance(node, bytes):  # exc-c14n output of ejx's own canonicalisation: trusted octets
        return smev_transform.transform_bytes(node)
    return smev_transform.transform(node)


TRANSFORM_METHODS: dict[str, Transform] = {ENVELOPED_SIGNATURE: _enveloped, EXC_C14N: _exclusive_c14n,
                                           SMEV_TRANSFORM: _smev}

# A step skipped when the next one, given the element, already includes it: the SMEV transform of an
# element is exactly that of its exc-c14n octets (see broker.xml.smev_transform), so serialising and
# re-parsing in between would only cost time.
_INCLUDED_IN_NEXT = {(EXC_C14N, SMEV_TRANSFORM)}


def reference_octets(element: etree._Element, transforms: Sequence[str]) -> bytes:
    """The octets a Reference digests: ``element`` run through ``transforms`` in order."""
    node: etree._Element | bytes = element
    for i, uri in enumerate(transforms):
        if not isinstance(node, bytes) and tuple(transforms[i:i + 2]) in _INCLUDED_IN_NEXT:
            continue
        node = TRANSFORM_METHODS[uri](node)
    if not isinstance(node, bytes):
        raise TypeError(f"transform chain {list(transforms)} does not end in octets")
    return node


def canonical_reference_octets(octets: bytes, transforms: Sequence[str]) -> bytes:
    """What :func:`reference_octets` makes of the element whose exclusive c14n ``octets`` are, when the
    signature is not inside it: the enveloped transform and exc-c14n leave such octets as they are."""
    for uri in transforms:
        if uri not in (ENVELOPED_SIGNATURE, EXC_C14N):
            octets = TRANSFORM_METHODS[uri](octets)  # type: ignore[assignment]
    return octets


class SignatureMethod(Protocol):
    """One XML-DSig SignatureMethod: its URI, the keys it fits, its Reference profile, raw sign/verify."""

    uri: str
    digest_method: str
    """DigestMethod URI of the Reference (a key in :data:`DIGEST_METHODS`)."""
    transforms: tuple[str, ...]
    """The Reference's transform chain, in order (keys in :data:`TRANSFORM_METHODS`)."""

    def fits(self, key: PublicKeyTypes) -> bool:
        """Whether ``key`` is of the kind and size this method uses."""

    def sign(self, key: PrivateKeyTypes, data: bytes) -> bytes:
        """The SignatureValue bytes over ``data`` (canonical SignedInfo)."""

    def verify(self, key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is a valid SignatureValue over ``data``."""


class RsaSha256:
    """RSASSA-PKCS1-v1_5 with SHA-256, keys of at least 2048 bits."""

    uri = RSA_SHA256
    digest_method = SHA256
    transforms = TRANSFORMS
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
    digest_method = SHA256
    transforms = TRANSFORMS
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


class Gost2012_256:
    """GOST R 34.10-2012 (256) over Streebog-256, the SMEV 3 profile; natively via :mod:`.gost`.

    Its keys are not ``cryptography``'s (that wheel cannot do GOST): signing takes a
    :class:`~.gost.GostPrivateKey`, verifying a :class:`~.gost.GostCertificate`.
    The value is the engine's raw 64 bytes, as SMEV carries it.
    """

    uri = GOST_2012_256
    digest_method = STREEBOG_256
    transforms = SMEV_TRANSFORMS

    def fits(self, key: object) -> bool:
        return isinstance(key, gost.GostCertificate) and key.is_gost

    def sign(self, key: gost.GostPrivateKey, data: bytes) -> bytes:
        return key.sign(data)

    def verify(self, key: gost.GostCertificate, signature: bytes, data: bytes) -> bool:
        try:
            key.verify(data, signature)
        except gost.GostSignatureInvalid:
            return False
        return True


def _registry(*methods: SignatureMethod) -> dict[str, SignatureMethod]:
    """Methods by URI; one naming a digest or transform that is not registered is a bug, caught at import."""
    for method in methods:
        if method.digest_method not in DIGEST_METHODS or not TRANSFORM_METHODS.keys() >= set(method.transforms):
            raise TypeError(f"{method.uri} names a digest or transform that is not registered")
    return {m.uri: m for m in methods}


SIGNATURE_METHODS: dict[str, SignatureMethod] = _registry(RsaSha256(), EcdsaP256Sha256(), Gost2012_256())
