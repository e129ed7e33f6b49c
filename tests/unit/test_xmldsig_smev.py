"""Detached XML-DSig by Id (``sign_reference`` / ``verify_reference``) as SMEV 3 uses it, against independent tools.

GOST R 34.10-2012 signatures are checked both ways against the ``openssl`` CLI with the gost
engine (the canonical SignedInfo and the SMEV-transformed octets handed to it as files); RSA and
ECDSA ones both ways against xmlsec1. ``openssl`` + ``libengine-gost-openssl`` and ``xmlsec1`` are
required test tools: without them these tests fail, they never skip. Every key and document is
made here.
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

from broker.domain.faults import Failure, InvalidContent, SignatureVerificationFault
from broker.smev3 import codec
from broker.smev3.codec import Version
from broker.xml import hardened
from broker.xml.signing import (
    DS_NS,
    EXC_C14N,
    GOST_2012_256,
    SMEV_TRANSFORM,
    STREEBOG_256,
    SigningKey,
    find_signatures,
    gost,
    keys,
    sign_reference,
    verify_reference,
)
from broker.xml.signing.algorithms import exclusive_c14n
from broker.xml.smev_transform import transform

V12 = Version.V1_2
SPRD = f"{{{V12.types}}}SenderProvidedRequestData"
NOW = datetime(2025, 9, 1, 8, 30, tzinfo=UTC)
CONTENT = ('<d:DiaryRequest xmlns:d="urn://ejx/diary/1.0" xmlns:unused="urn://unused">'
           '<d:StudentId>42</d:StudentId><d:Note lang="ru">оценка «5» &amp; &lt;ok&gt;</d:Note><d:Empty/>'
           '</d:DiaryRequest>')


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None or subprocess.run([path, "engine", "gost"], capture_output=True).returncode != 0:
        pytest.fail(f"openssl with the gost engine is required: apt-get install -y openssl {gost.PACKAGE}")
    return path


@pytest.fixture(scope="module")
def xmlsec1() -> str:
    path = shutil.which("xmlsec1")
    if path is None:
        pytest.fail("xmlsec1 is required for the interop tests: apt-get install -y xmlsec1")
    return path


def ossl(openssl: str, command: str, *args: str | Path) -> bytes:
    done = subprocess.run([openssl, command, "-engine", "gost", *map(str, args)], capture_output=True,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@pytest.fixture(scope="module")
def gost_pair(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("gost")
    key_pem, cert_pem = gost.generate_key_and_certificate("ejx SMEV signer", days=30)
    (directory / "key.pem").write_bytes(key_pem)
    (directory / "cert.pem").write_bytes(cert_pem)
    return directory / "key.pem", directory / "cert.pem"


@pytest.fixture(scope="module")
def gost_key(gost_pair) -> SigningKey:
    return SigningKey.from_pem_files(*gost_pair)


W3C_ALGORITHMS = [a for a in keys.KeyAlgorithm if not a.is_gost]


@pytest.fixture(scope="module", params=W3C_ALGORITHMS, ids=lambda a: a.value)
def w3c_pair(request, tmp_path_factory) -> tuple[Path, Path]:
    return keys.write_dev_pair(tmp_path_factory.mktemp(request.param.value), algorithm=request.param)


def request_message() -> etree._Element:
    """A 1.2 GetRequestResponse with an unsigned RequestMessage, as ejx serves it (pretty indentation included)."""
    data = codec.sender_provided_request_data(V12, message_id=str(uuid.uuid1()), transaction_code="TX-1",
                                              content=hardened.parse_trusted(CONTENT.encode()))
    meta = codec.Metadata(data[0].text, "BROADCAST", ("EJX", "ejx"), NOW)
    message = codec.request_message(V12, data, meta, "reply-to")
    return codec.answer(V12, "GetRequest", message)


def signed_message(key: SigningKey, smev_key: SigningKey | None = None) -> etree._Element:
    """The message with the sender's signature over SenderProvidedRequestData and SMEV's over Request."""
    envelope = request_message()
    request = envelope.find(f".//{{{V12.types}}}Request")
    codec.attach_signature(request, "SenderInformationSystemSignature", sign_reference(request[0], key))
    codec.attach_signature(request.getparent(), "SMEVSignature", sign_reference(request, smev_key or key))
    return envelope


def wire(element: etree._Element) -> etree._Element:
    return hardened.parse(etree.tostring(element.getroottree(), encoding="UTF-8", xml_declaration=True))


def ds(signature: etree._Element, path: str) -> etree._Element:
    return signature.find(path, {"ds": DS_NS})


# ---- GOST against openssl ------------------------------------------------------------------------------------

def test_gost_signatures_verify_with_openssl(openssl, gost_pair, gost_key, tmp_path):
    assert gost_key.algorithm == GOST_2012_256
    envelope = wire(signed_message(gost_key))
    (tmp_path / "pub.pem").write_bytes(ossl(openssl, "x509", "-in", gost_pair[1], "-pubkey", "-noout"))
    signatures = find_signatures(envelope)
    assert [ds(s, "ds:SignedInfo/ds:Reference").get("URI") for s in signatures] == ["#SIGNED_BY_CALLER",
                                                                                    "#SIGNED_BY_SMEV"]
    for signature in signatures:
        reference = ds(signature, "ds:SignedInfo/ds:Reference")
        assert [t.get("Algorithm") for t in ds(reference, "ds:Transforms")] == [EXC_C14N, SMEV_TRANSFORM]
        assert ds(reference, "ds:DigestMethod").get("Algorithm") == STREEBOG_256
        covered = envelope.xpath("//*[@Id=$id]", id=reference.get("URI")[1:])[0]
        (tmp_path / "octets").write_bytes(transform(covered))
        digest = ossl(openssl, "dgst", "-md_gost12_256", "-binary", tmp_path / "octets")
        assert base64.b64encode(digest).decode() == ds(reference, "ds:DigestValue").text

        (tmp_path / "signed-info").write_bytes(exclusive_c14n(ds(signature, "ds:SignedInfo")))
        (tmp_path / "sig.bin").write_bytes(base64.b64decode(ds(signature, "ds:SignatureValue").text))
        assert b"Verified OK" in ossl(openssl, "dgst", "-md_gost12_256", "-verify", tmp_path / "pub.pem",
                                      "-signature", tmp_path / "sig.bin", tmp_path / "signed-info")
        cert = base64.b64decode(ds(signature, "ds:KeyInfo/ds:X509Data/ds:X509Certificate").text)
        assert cert == gost_key.certificate_der


def test_openssl_made_gost_signatures_verify(openssl, tmp_path):
    """SignedInfo written by hand, indented as a human would, digest and signature by the openssl CLI."""
    ossl(openssl, "req", "-x509", "-newkey", "gost2012_256", "-pkeyopt", "paramset:A", "-nodes", "-md_gost12_256",
         "-keyout", tmp_path / "key.pem", "-out", tmp_path / "cert.pem", "-subj", "/CN=openssl SMEV client",
         "-days", "2")
    envelope = request_message()
    data = envelope.find(f".//{SPRD}")
    (tmp_path / "octets").write_bytes(transform(data))
    digest = base64.b64encode(ossl(openssl, "dgst", "-md_gost12_256", "-binary", tmp_path / "octets")).decode()
    der = gost.GostCertificate.from_pem((tmp_path / "cert.pem").read_bytes()).der
    slot = etree.SubElement(data.getparent(), f"{{{V12.types}}}SenderInformationSystemSignature")
    slot.append(hardened.parse_trusted(f"""<ds:Signature xmlns:ds="{DS_NS}">
  <ds:SignedInfo>
    <ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/>
    <ds:SignatureMethod Algorithm="{GOST_2012_256}"/>
    <ds:Reference URI="#SIGNED_BY_CALLER">
      <ds:Transforms>
        <ds:Transform Algorithm="{EXC_C14N}"/>
        <ds:Transform Algorithm="{SMEV_TRANSFORM}"/>
      </ds:Transforms>
      <ds:DigestMethod Algorithm="{STREEBOG_256}"/>
      <ds:DigestValue>{digest}</ds:DigestValue>
    </ds:Reference>
  </ds:SignedInfo>
  <ds:SignatureValue/>
  <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{base64.b64encode(der).decode()}</ds:X509Certificate>
  </ds:X509Data></ds:KeyInfo>
</ds:Signature>""".encode()))
    signature = slot[0]
    (tmp_path / "signed-info").write_bytes(exclusive_c14n(ds(signature, "ds:SignedInfo")))
    ossl(openssl, "dgst", "-md_gost12_256", "-sign", tmp_path / "key.pem", "-out", tmp_path / "sig.bin",
         tmp_path / "signed-info")
    ds(signature, "ds:SignatureValue").text = base64.b64encode((tmp_path / "sig.bin").read_bytes()).decode()

    verified = verify_reference(find_signatures(wire(envelope))[0])
    assert verified.reference_id == "SIGNED_BY_CALLER" and verified.covered.tag == SPRD
    assert verified.subject == "CN=openssl SMEV client" and verified.algorithm == GOST_2012_256
    assert verified.certificate_der == der


# ---- what is covered, and by whom ----------------------------------------------------------------------------

def test_both_signatures_of_a_message_name_what_they_cover(gost_key, w3c_pair):
    smev = SigningKey.from_pem_files(*w3c_pair)
    envelope = wire(signed_message(gost_key, smev))
    sender, by_smev = (verify_reference(s) for s in find_signatures(envelope))
    assert (sender.reference_id, etree.QName(sender.covered).localname) == ("SIGNED_BY_CALLER",
                                                                           "SenderProvidedRequestData")
    assert (by_smev.reference_id, etree.QName(by_smev.covered).localname) == ("SIGNED_BY_SMEV", "Request")
    assert sender.algorithm == GOST_2012_256 and by_smev.algorithm == smev.algorithm
    assert by_smev.certificate_der == smev.certificate_der and sender.subject == "CN=ejx SMEV signer"
    assert sender.covered is envelope.find(f".//{SPRD}")  # the very element, in the caller's document
    assert sender.not_before <= datetime.now(UTC) <= sender.not_after
    assert sender.serial_number == gost.GostCertificate.from_der(sender.certificate_der).serial_number


def test_a_signature_stays_valid_wherever_it_is_placed(gost_key):
    """Exclusive c14n of SignedInfo ignores the namespaces around ds:Signature: placing it is safe."""
    envelope = request_message()
    data = envelope.find(f".//{SPRD}")
    signature = sign_reference(data, gost_key)
    holder = etree.SubElement(envelope, "{urn://somewhere/else}Holder", nsmap={None: "urn://somewhere/else",
                                                                               "ds": DS_NS})
    holder.append(signature)
    assert verify_reference(find_signatures(wire(envelope))[0]).covered.tag == SPRD


# ---- refusals ------------------------------------------------------------------------------------------------

def refused(envelope: etree._Element, match: str, *, index: int = 0, at: datetime | None = None) -> None:
    with pytest.raises(SignatureVerificationFault, match=match):
        verify_reference(find_signatures(wire(envelope))[index], at=at)


def test_only_bad_bytes_make_the_reference_client_refuse_a_message_for_good(gost_key):
    """accepted=false is final in SMEV: the client sends it for a digest or SignatureValue that does not
    match, never for a certificate a rotation or the clock mends (the message comes back instead)."""
    from broker.smev3.client import Pulled

    def refusal(envelope, **options) -> Pulled:  # noqa: ANN001
        with pytest.raises(SignatureVerificationFault) as caught:
            verify_reference(find_signatures(wire(envelope))[0], **options)
        return Pulled(uuid.uuid1(), None, caught.value)

    altered = signed_message(gost_key)
    altered.find(".//{urn://ejx/diary/1.0}StudentId").text = "43"
    assert refusal(altered).refuse_for_good
    value = signed_message(gost_key)
    node = value.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue")
    node.text = base64.b64encode(bytes(64)).decode()
    assert refusal(value).refuse_for_good
    sound = signed_message(gost_key)
    verified = verify_reference(find_signatures(wire(sound))[0])
    for moment in (verified.not_before - timedelta(days=1), verified.not_after + timedelta(seconds=1)):
        assert not refusal(sound, at=moment).refuse_for_good
    untrusted = SignatureVerificationFault("signed by untrusted certificates",
                                           details={"reason": "CertificateIsNotTrusted"})
    assert not Pulled(uuid.uuid1(), None, untrusted).refuse_for_good


def test_altered_content_fails_on_the_digest(gost_key):
    envelope = signed_message(gost_key)
    envelope.find(".//{urn://ejx/diary/1.0}StudentId").text = "43"
    refused(envelope, "digest of SenderProvidedRequestData Id='SIGNED_BY_CALLER' does not match")
    refused(envelope, "digest of Request Id='SIGNED_BY_SMEV' does not match", index=1)


def test_whitespace_and_prefixes_do_not_change_the_smev_digest(gost_key):
    """The SMEV transform's point: re-indented or re-prefixed content keeps its signature."""
    envelope = signed_message(gost_key)
    text = etree.tostring(envelope, encoding="unicode").replace("<d:", "\n   <q:").replace("</d:", "</q:")
    text = text.replace('xmlns:d="urn://ejx/diary/1.0"', 'xmlns:q="urn://ejx/diary/1.0"')
    assert "<q:StudentId>" in text
    assert verify_reference(find_signatures(hardened.parse(text.encode()))[0]).reference_id == "SIGNED_BY_CALLER"


def test_altered_signature_value_or_signed_info_fails_on_the_signature(gost_key, w3c_pair):
    for key in (gost_key, SigningKey.from_pem_files(*w3c_pair)):
        envelope = signed_message(key)
        value = ds(find_signatures(envelope)[0], "ds:SignatureValue")
        raw = bytearray(base64.b64decode(value.text))
        raw[10] ^= 1
        value.text = base64.b64encode(bytes(raw)).decode()
        refused(envelope, "SignatureValue over SignedInfo .* does not verify")

        envelope = signed_message(key)
        ds(find_signatures(envelope)[0], "ds:SignedInfo/ds:Reference").tail = "\n"  # SignedInfo as it stands
        refused(envelope, "SignatureValue over SignedInfo")


def test_the_id_must_name_exactly_one_element_of_the_same_document(gost_key):
    envelope = signed_message(gost_key)
    decoy = copy.deepcopy(envelope.find(f".//{SPRD}"))
    envelope.find(f"{{{codec.SOAP}}}Body").append(decoy)
    refused(envelope, "2 attributes of this document carry that Id")

    envelope = signed_message(gost_key)
    etree.SubElement(envelope.find(f"{{{codec.SOAP}}}Body"), "{urn://x}Other", ID="SIGNED_BY_CALLER")
    refused(envelope, "carry that Id; it must be unique")

    envelope = signed_message(gost_key)
    envelope.find(f".//{SPRD}").set("Id", "RENAMED")
    refused(envelope, "no element of this document has that Id")

    for uri in ("", "#", "http://evil.example/doc.xml#SIGNED_BY_CALLER", "#a b", "SIGNED_BY_CALLER"):
        envelope = signed_message(gost_key)
        ds(find_signatures(envelope)[0], "ds:SignedInfo/ds:Reference").set("URI", uri)
        refused(envelope, "Reference URI must be '#' and the Id of an element in the same document")


def test_a_signature_moved_to_another_document_covers_nothing_there(gost_key):
    signature = find_signatures(signed_message(gost_key))[0]
    elsewhere = hardened.parse_trusted(b'<o:Other xmlns:o="urn://o"><o:Slot/></o:Other>')
    elsewhere[0].append(copy.deepcopy(signature))
    refused(elsewhere, "no element of this document has that Id")


def test_wrapping_shapes_are_refused(gost_key):
    """The signed original hidden in a ds:Object while a forgery takes its place; a signature inside what it covers."""
    envelope = signed_message(gost_key)
    data = envelope.find(f".//{SPRD}")
    forged = copy.deepcopy(data)
    forged.set("Id", "FORGED")
    forged.find(".//{urn://ejx/diary/1.0}StudentId").text = "666"
    decoy = etree.SubElement(envelope, f"{{{DS_NS}}}Signature")
    etree.SubElement(decoy, f"{{{DS_NS}}}Object").append(copy.deepcopy(data))
    data.getparent().replace(data, forged)
    refused(envelope, "points into a ds:Signature: refused as wrapping")

    envelope = request_message()
    data = envelope.find(f".//{SPRD}")
    data.append(sign_reference(data, gost_key))
    refused(envelope, "sits inside the element it covers")


def test_certificate_validity_is_checked_at_the_given_moment(gost_key):
    envelope = signed_message(gost_key)
    verified = verify_reference(find_signatures(wire(envelope))[0])
    refused(envelope, "matches, but certificate CN=ejx SMEV signer .* is valid only",
            at=verified.not_after + timedelta(seconds=1))
    refused(envelope, "is valid only", at=verified.not_before - timedelta(days=1))
    assert verify_reference(find_signatures(wire(envelope))[0], at=verified.not_before).reference_id
    with pytest.raises(SignatureVerificationFault) as expired:
        verify_reference(find_signatures(wire(envelope))[0], at=verified.not_after + timedelta(seconds=1))
    assert expired.value.details == {"reason": "CertificateIsExpired"}  # SMEV's code, as its clients expect
    with pytest.raises(SignatureVerificationFault) as early:
        verify_reference(find_signatures(wire(envelope))[0], at=verified.not_before - timedelta(days=1))
    assert early.value.details == {}
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_reference(find_signatures(envelope)[0], at=datetime(2025, 1, 1))


def test_an_expired_archive_verifies_at_its_signing_time(tmp_path):
    key_pem, cert_pem = gost.generate_key_and_certificate("short-lived", days=1)
    key = SigningKey.from_pem(key_pem, cert_pem)
    envelope = signed_message(key)
    later = datetime.now(UTC) + timedelta(days=3)
    refused(envelope, "is valid only", at=later)
    assert verify_reference(find_signatures(wire(envelope))[0]).subject == "CN=short-lived"


@pytest.mark.parametrize("path, value, match", [
    ("ds:SignedInfo/ds:SignatureMethod", "http://www.w3.org/2001/04/xmldsig-more#gostr34102001-gostr3411",
     "SignatureMethod .* is not accepted"),
    ("ds:SignedInfo/ds:SignatureMethod", "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
     "SignatureMethod .* is not accepted"),
    ("ds:SignedInfo/ds:CanonicalizationMethod", "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
     "CanonicalizationMethod .* is not accepted"),
    ("ds:SignedInfo/ds:Reference/ds:DigestMethod", "http://www.w3.org/2001/04/xmlenc#sha256",
     "DigestMethod .* is not accepted"),
    ("ds:SignedInfo/ds:Reference/ds:DigestMethod", "urn:ietf:params:xml:ns:cpxmlsec:algorithms:gostr3411",
     "DigestMethod .* is not accepted"),
    ("ds:SignedInfo/ds:Reference/ds:Transforms/ds:Transform", "http://www.w3.org/TR/1999/REC-xslt-19991116",
     "Transform .* is not accepted"),
    ("ds:SignedInfo/ds:Reference/ds:Transforms/ds:Transform", SMEV_TRANSFORM, "transform chain .* is not accepted"),
])
def test_unknown_algorithms_are_refused(gost_key, path, value, match):
    envelope = signed_message(gost_key)
    ds(find_signatures(envelope)[0], path).set("Algorithm", value)
    refused(envelope, match)


def test_a_method_that_does_not_fit_the_key_is_refused(gost_key, w3c_pair):
    envelope = signed_message(SigningKey.from_pem_files(*w3c_pair))
    signature = find_signatures(envelope)[0]
    ds(signature, "ds:SignedInfo/ds:SignatureMethod").set("Algorithm", GOST_2012_256)
    ds(signature, "ds:SignedInfo/ds:Reference/ds:DigestMethod").set("Algorithm", STREEBOG_256)
    refused(envelope, "does not fit the certificate")


def test_a_certificate_whose_key_usage_excludes_signing_is_refused():
    """A caller's key certified for encryption only: its signatures mean nothing, however well they verify."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "encryption only")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=30))
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=True, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .sign(private, hashes.SHA256()))
    key = SigningKey.from_pem(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
        certificate.public_bytes(serialization.Encoding.PEM))
    refused(signed_message(key), "certificate CN=encryption only is not for signatures")


def test_signing_refuses_what_would_not_verify(gost_key, gost_pair, w3c_pair):
    envelope = request_message()
    data = envelope.find(f".//{SPRD}")
    envelope.find(f"{{{codec.SOAP}}}Body").append(etree.Element("{urn://x}Twin", Id="SIGNED_BY_CALLER"))
    with pytest.raises(InvalidContent, match="not unique"):
        sign_reference(data, gost_key)
    with pytest.raises(InvalidContent, match="needs an Id"):
        sign_reference(envelope, gost_key)
    with pytest.raises(ValueError, match="transform chain"):
        sign_reference(data, gost_key, transforms=[SMEV_TRANSFORM, EXC_C14N])
    with pytest.raises(Failure, match="not a usable PEM private key: Unknown key type"):
        SigningKey.from_pem_files(gost_pair[0], w3c_pair[1])
    with pytest.raises(Failure, match="signing key is not the GOST key of CN=ejx SMEV signer"):
        SigningKey.from_pem_files(w3c_pair[0], gost_pair[1])
    other_key, _ = gost.generate_key_and_certificate("other")
    with pytest.raises(Failure, match="signing key does not match the certificate of CN=ejx SMEV signer"):
        SigningKey.from_pem(other_key, gost_pair[1].read_bytes())


def test_rsa_and_ecdsa_keys_can_sign_with_the_smev_chain(w3c_pair):
    key = SigningKey.from_pem_files(*w3c_pair)
    envelope = request_message()
    data = envelope.find(f".//{SPRD}")
    codec.attach_signature(data.getparent(), "SenderInformationSystemSignature",
                           sign_reference(data, key, transforms=[EXC_C14N, SMEV_TRANSFORM]))
    assert verify_reference(find_signatures(wire(envelope))[0]).algorithm == key.algorithm


# ---- RSA / ECDSA against xmlsec1 -----------------------------------------------------------------------------

ID_ATTR = ["--id-attr:Id", f"{V12.types}:SenderProvidedRequestData"]


def xmlsec(xmlsec1: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([xmlsec1, *map(str, args)], capture_output=True, text=True, timeout=30)


def test_xmlsec1_verifies_rsa_and_ecdsa_signatures(xmlsec1, w3c_pair, tmp_path):
    key = SigningKey.from_pem_files(*w3c_pair)
    envelope = request_message()
    data = envelope.find(f".//{SPRD}")
    codec.attach_signature(data.getparent(), "SenderInformationSystemSignature", sign_reference(data, key))
    signed = tmp_path / "signed.xml"
    signed.write_bytes(codec.to_bytes(envelope))
    result = xmlsec(xmlsec1, "--verify", *ID_ATTR, "--trusted-pem", w3c_pair[1], signed)
    assert result.returncode == 0 and result.stderr.startswith("OK"), result.stderr

    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(signed.read_bytes().replace(b">42<", b">43<"))
    assert xmlsec(xmlsec1, "--verify", *ID_ATTR, "--trusted-pem", w3c_pair[1], tampered).returncode != 0


def test_xmlsec1_signatures_verify(xmlsec1, w3c_pair, tmp_path):
    key = SigningKey.from_pem_files(*w3c_pair)
    envelope = request_message()
    data = envelope.find(f".//{SPRD}")
    template = sign_reference(data, key)  # the shape we want, emptied for xmlsec1 to fill in
    for name in ("ds:SignedInfo/ds:Reference/ds:DigestValue", "ds:SignatureValue"):
        ds(template, name).text = None
    x509_data = ds(template, "ds:KeyInfo/ds:X509Data")
    x509_data.remove(x509_data[0])
    codec.attach_signature(data.getparent(), "SenderInformationSystemSignature", template)
    unsigned, signed = tmp_path / "template.xml", tmp_path / "by-xmlsec1.xml"
    unsigned.write_bytes(etree.tostring(envelope, pretty_print=True))
    result = xmlsec(xmlsec1, "--sign", "--privkey-pem", f"{w3c_pair[0]},{w3c_pair[1]}", *ID_ATTR,
                    "--output", signed, unsigned)
    assert result.returncode == 0, result.stderr

    verified = verify_reference(find_signatures(hardened.parse(signed.read_bytes()))[0])
    assert verified.covered.tag == SPRD and verified.algorithm == key.algorithm
    assert verified.certificate_der == key.certificate_der
    tampered = signed.read_bytes().replace(b">42<", b">43<")
    with pytest.raises(SignatureVerificationFault, match="digest"):
        verify_reference(find_signatures(hardened.parse(tampered))[0])
    assert re.search(rb"<ds:SignedInfo>\s+<ds:Canon", signed.read_bytes())  # indented SignedInfo, as it stands
