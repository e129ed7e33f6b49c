"""XML signatures of envelopes behind one small interface.

A :class:`Signer` signs ``SenderProvidedData`` by its ``Id`` and puts the
``ds:Signature`` into ``CallerInformationSystemSignature``; a :class:`Verifier`
checks one and hands back only what the signature covers.

Signing and verification are written directly on lxml's exclusive c14n and
``cryptography`` rather than on a general XML-DSig library: the envelope admits
exactly one signature shape, so a general processor's flexibility buys nothing
here but attack surface (wrapping) and time (about 3x per signature). signxml
and xmlsec1 remain the independent cross-checks in the tests.

``algorithms`` holds the methods by URI, ``signer`` and ``verifier`` the two
sides, ``trust`` which certificates are believed, ``keys`` loading and dev keys.
``xmldsig`` is the general detached form SMEV 3 uses (``sign_reference``,
``verify_reference``: any element by Id, several signatures per document,
GOST R 34.10-2012 beside RSA and ECDSA); ``gost`` the native GOST primitives.
"""

from broker.xml.signing import keys
from broker.xml.signing.algorithms import (
    DIGEST_METHODS,
    DS_NS,
    ECDSA_SHA256,
    ENVELOPED_SIGNATURE,
    EXC_C14N,
    GOST_2012_256,
    RSA_SHA256,
    SHA256,
    SIGNATURE_METHODS,
    SMEV_TRANSFORM,
    SMEV_TRANSFORMS,
    STREEBOG_256,
    TRANSFORM_METHODS,
    TRANSFORMS,
    EcdsaP256Sha256,
    Gost2012_256,
    RsaSha256,
    SignatureMethod,
)
from broker.xml.signing.signer import Signer, XmlDsigSigner
from broker.xml.signing.trust import TrustedCertificates
from broker.xml.signing.verifier import (
    SIGNATURE,
    VerifiedEnvelope,
    Verifier,
    VerifierOptions,
)
from broker.xml.signing.xmldsig import (
    REFERENCE_CHAINS,
    SigningKey,
    VerifiedSignature,
    find_signatures,
    sign_reference,
    verify_reference,
)

__all__ = [
    "DIGEST_METHODS", "DS_NS", "ECDSA_SHA256", "ENVELOPED_SIGNATURE", "EXC_C14N", "GOST_2012_256",
    "REFERENCE_CHAINS", "RSA_SHA256", "SHA256", "SIGNATURE", "SIGNATURE_METHODS", "SMEV_TRANSFORM",
    "SMEV_TRANSFORMS", "STREEBOG_256", "TRANSFORMS", "TRANSFORM_METHODS",
    "EcdsaP256Sha256", "Gost2012_256", "RsaSha256", "SignatureMethod", "Signer", "SigningKey",
    "TrustedCertificates", "VerifiedEnvelope", "VerifiedSignature", "Verifier", "VerifierOptions",
    "XmlDsigSigner", "find_signatures", "keys", "sign_reference", "verify_reference",
]
