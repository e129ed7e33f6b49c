"""Interop with xmlsec1 (libxmlsec1 + OpenSSL), the reference C implementation of XML-DSig.

xmlsec1 is a required test tool (Debian package ``xmlsec1``): without it these
tests fail, they never skip, so CI cannot silently lose the cross-check.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from broker.domain.faults import SignatureVerificationFault
from broker.xml import hardened
from broker.xml.envelope import EVENTS_NS, SIGNATURE_CONTAINER, build_envelope, envelope_document, signed_block
from broker.xml.signing import DS_NS, Verifier, XmlDsigSigner, keys

ID_ATTR = ["--id-attr:Id", "urn://ejx/envelope/1:SenderProvidedData"]


@pytest.fixture(scope="module")
def xmlsec1() -> str:
    path = shutil.which("xmlsec1")
    if path is None:
        pytest.fail("xmlsec1 is not installed; it is required for the interop tests: apt-get install -y xmlsec1")
    return path


@pytest.fixture(scope="module", params=[a for a in keys.KeyAlgorithm if not a.is_gost])  # xmlsec1: no GOST
def dev_pair(request, tmp_path_factory) -> tuple[Path, Path]:
    return keys.write_dev_pair(tmp_path_factory.mktemp(request.param.value), algorithm=request.param)


def event() -> etree._Element:
    root = etree.Element(f"{{{EVENTS_NS}}}AttendanceMarked", nsmap={None: EVENTS_NS})
    etree.SubElement(root, f"{{{EVENTS_NS}}}status").text = "absent «н»"
    return root


def run(xmlsec1: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([xmlsec1, *args], capture_output=True, text=True, timeout=30)


def signed_in_place(signer: XmlDsigSigner) -> bytes:
    """``ejx envelope sign``'s way: a tree signed in place, then serialised."""
    return etree.tostring(signer.sign(build_envelope(event(), recipient="EPGU")), xml_declaration=True,
                          encoding="UTF-8")


def signed_as_bytes(signer: XmlDsigSigner) -> bytes:
    """The router's way: the canonical block and its signature written as octets, no tree."""
    block = signed_block(event(), recipient="EPGU")
    return envelope_document(block, signer.signature(block))


@pytest.mark.parametrize("make", [signed_in_place, signed_as_bytes])
def test_xmlsec1_verifies_our_signatures(xmlsec1, dev_pair, tmp_path, make):
    key_path, cert_path = dev_pair
    signed = tmp_path / "signed.xml"
    signed.write_bytes(make(XmlDsigSigner.from_pem_files(key_path, cert_path)))

    result = run(xmlsec1, "--verify", *ID_ATTR, "--trusted-pem", str(cert_path), str(signed))
    assert result.returncode == 0 and result.stderr.startswith("OK"), result.stderr

    # The same check must be able to fail: a tampered copy, and an unrelated trust anchor.
    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(signed.read_bytes().replace(b"<Recipient>EPGU<", b"<Recipient>EVIL<"))
    assert run(xmlsec1, "--verify", *ID_ATTR, "--trusted-pem", str(cert_path), str(tampered)).returncode != 0
    _, stranger = keys.write_dev_pair(tmp_path / "stranger")
    assert run(xmlsec1, "--verify", *ID_ATTR, "--trusted-pem", str(stranger), str(signed)).returncode != 0


def template(envelope: etree._Element, method: str) -> etree._Element:
    """Our envelope with an empty ds:Signature for xmlsec1 to fill: pretty-printed, as a human would write it."""
    etree.SubElement(envelope, SIGNATURE_CONTAINER).append(etree.fromstring(f"""
<ds:Signature xmlns:ds="{DS_NS}">
  <ds:SignedInfo>
    <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
    <ds:SignatureMethod Algorithm="{method}"/>
    <ds:Reference URI="#{envelope[0].get('Id')}">
      <ds:Transforms>
        <ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
        <ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
      </ds:Transforms>
      <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
      <ds:DigestValue/>
    </ds:Reference>
  </ds:SignedInfo>
  <ds:SignatureValue/>
  <ds:KeyInfo><ds:X509Data/></ds:KeyInfo>
</ds:Signature>"""))
    return envelope


def test_we_verify_xmlsec1_signatures(xmlsec1, dev_pair, tmp_path):
    key_path, cert_path = dev_pair
    method = XmlDsigSigner.from_pem_files(key_path, cert_path).method
    unsigned = tmp_path / "template.xml"
    unsigned.write_bytes(etree.tostring(template(build_envelope(event(), recipient="RSMEV", test=True), method),
                                        pretty_print=True))
    signed = tmp_path / "by-xmlsec1.xml"
    result = run(xmlsec1, "--sign", "--privkey-pem", f"{key_path},{cert_path}", *ID_ATTR,
                 "--output", str(signed), str(unsigned))
    assert result.returncode == 0, result.stderr

    verifier = Verifier.from_pem_files([cert_path])
    verified = verifier.verify(hardened.parse(signed.read_bytes()))
    assert verified.header.recipient == "RSMEV" and verified.header.test
    assert verified.signature_method == method

    tampered = signed.read_bytes().replace(b">absent ", b">excused ")
    assert tampered != signed.read_bytes()
    with pytest.raises(SignatureVerificationFault, match="digest"):
        verifier.verify(hardened.parse(tampered))
