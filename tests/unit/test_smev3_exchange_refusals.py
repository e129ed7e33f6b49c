"""Requests the SMEV 3 face refuses before it knows the caller: each gets a SOAP fault naming why, never a 500.

These fail while the caller's signature is being verified, so no queue or participant
registry is reached (both are None here: a lookup would raise).
"""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from lxml import etree

from broker.smev3 import codec
from broker.smev3.exchange import MessageExchange
from broker.xml.signing.algorithms import DS_NS
from broker.xml.signing.xmldsig import MAX_CERTIFICATE_BYTES
from tests.smev3_support import ecdsa_pair, get_request

VERSION = codec.Version.V1_3


def answer(body: bytes) -> tuple[str, str]:
    """(the SMEV fault named in the detail, faultstring) of the exchange's answer, which must be a fault."""
    data, is_fault = asyncio.run(MessageExchange(queue=None, participants=None).handle(VERSION, body))
    assert is_fault
    root = etree.fromstring(data)
    return etree.QName(root.find(".//detail")[0]).localname, root.findtext(".//faultstring")


def with_certificate(der: bytes) -> bytes:
    root = etree.fromstring(get_request(VERSION, ecdsa_pair("agency").key))
    root.find(f".//{{{DS_NS}}}X509Certificate").text = base64.b64encode(der).decode()
    return etree.tostring(root)


def test_a_relative_namespace_uri_inside_the_signed_element_is_a_signature_fault() -> None:
    body = get_request(VERSION, ecdsa_pair("agency").key)
    start = re.search(rb"<([A-Za-z0-9]+:)?MessageTypeSelector", body)
    body = body[:start.end()] + b' xmlns:zz="rel/ative"' + body[start.end():]
    code, description = answer(body)
    assert code == "SignatureVerificationFault"
    assert "namespace URI" in description and "absolute" in description


def test_a_certificate_with_a_key_of_unknown_type_is_a_signature_fault() -> None:
    issuer = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd key")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(ed25519.Ed25519PrivateKey.generate().public_key()).serial_number(1)
                   .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
                   .sign(issuer, hashes.SHA256())).public_bytes(serialization.Encoding.DER)
    unknown = certificate.replace(b"\x06\x03\x2b\x65\x70", b"\x06\x03\x2b\x65\x7f", 1)  # Ed25519's OID → 1.3.101.127
    assert unknown != certificate
    code, description = answer(with_certificate(unknown))
    assert code == "SignatureVerificationFault"
    assert "not a usable certificate" in description


def test_an_oversized_certificate_is_refused_before_it_is_parsed() -> None:
    code, description = answer(with_certificate(b"\x30" * (MAX_CERTIFICATE_BYTES + 1)))
    assert code == "SignatureVerificationFault"
    assert f"at most {MAX_CERTIFICATE_BYTES}" in description


def test_an_unexpected_error_still_gets_a_soap_fault(monkeypatch) -> None:
    def broken(*_args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(MessageExchange, "_verified", broken)
    code, description = answer(get_request(VERSION, ecdsa_pair("agency").key))
    assert code == "SMEVFailure"
    assert "smev3.internal_error" in description
