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
"""

from broker.xml.signing import keys
from broker.xml.signing.algorithms import (
    DIGEST_METHODS,
    DS_NS,
    ECDSA_SHA256,
    ENVELOPED_SIGNATURE,
    EXC_C14N,
    RSA_SHA256,
    SHA256,
    SIGNATURE_METHODS,
    TRANSFORM_METHODS,
    TRANSFORMS,
    EcdsaP256Sha256,
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

__all__ = [
    "DIGEST_METHODS", "DS_NS", "ECDSA_SHA256", "ENVELOPED_SIGNATURE", "EXC_C14N", "RSA_SHA256", "SHA256",
    "SIGNATURE", "SIGNATURE_METHODS", "TRANSFORMS", "TRANSFORM_METHODS",
    "EcdsaP256Sha256", "RsaSha256", "SignatureMethod", "Signer", "TrustedCertificates", "VerifiedEnvelope",
    "Verifier", "VerifierOptions", "XmlDsigSigner", "keys",
]
