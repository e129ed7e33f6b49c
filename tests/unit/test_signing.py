"""XML-DSig of envelopes: round trips, tampering, wrapping, trust, algorithms, and signxml as a second opinion."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner, XMLVerifier
from signxml.exceptions import InvalidSignature as SignxmlInvalid

from broker.domain.faults import Failure, InvalidContent, SignatureVerificationFault
from broker.xml.envelope import EVENTS_NS, MessageType, build_envelope, read_envelope
from broker.xml.signing import (
    DS_NS,
    ECDSA_SHA256,
    EXC_C14N,
    RSA_SHA256,
    Verifier,
    VerifierOptions,
    XmlDsigSigner,
    keys,
)

DS = f"{{{DS_NS}}}"
ENV = "{urn://ejx/envelope/1}"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"


def event() -> etree._Element:
    """Any element of the events namespace: signing does not look at the event's schema."""
    root = etree.Element(f"{{{EVENTS_NS}}}GradePosted", nsmap={"ev": EVENTS_NS})
    for name, text in (("studentId", "st-0001"), ("subjectCode", "MATH"), ("comment", "контрольная <работа> & ok")):
        etree.SubElement(root, f"{{{EVENTS_NS}}}{name}").text = text
    etree.SubElement(root, f"{{{EVENTS_NS}}}mark", scale="five-point").text = "5"
    return root


@pytest.fixture(scope="module", params=["ecdsa", "rsa"])
def pair(request):
    key = keys.generate_key(keys.KeyAlgorithm(request.param))
    return key, keys.self_signed_certificate(key)


@pytest.fixture(scope="module")
def signer(pair):
    return XmlDsigSigner(*pair)


@pytest.fixture(scope="module")
def verifier(pair):
    return Verifier([pair[1]])


def signed(signer: XmlDsigSigner, **fields) -> etree._Element:
    """A signed envelope as a receiver gets it: serialised and parsed again."""
    envelope = signer.sign(build_envelope(event(), recipient="EPGU", **fields))
    return etree.fromstring(etree.tostring(envelope))


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(Encoding.PEM).decode()


def test_round_trip_returns_the_signed_header_and_content(signer, verifier, pair):
    envelope = signer.sign(build_envelope(event(), recipient="EPGU", message_type=MessageType.BROADCAST, test=True))
    verified = verifier.verify(envelope)
    assert verified.header == read_envelope(envelope)[0]
    assert verified.header.recipient == "EPGU" and verified.header.test
    assert verified.content.tag == f"{{{EVENTS_NS}}}GradePosted"
    assert verified.certificate == pair[1]
    assert verified.signature_method == signer.method
    # Re-derived from the signed bytes, not a node of the received document.
    assert verified.signed_data.getparent() is None and verified.signed_data is not envelope[0]
    assert etree.tostring(verified.signed_data, method="c14n", exclusive=True) == \
        etree.tostring(envelope[0], method="c14n", exclusive=True)


def test_algorithm_follows_the_key(signer, pair):
    expected = ECDSA_SHA256 if isinstance(pair[0], ec.EllipticCurvePrivateKey) else RSA_SHA256
    assert signer.method == expected
    method = signed(signer).find(f".//{DS}SignatureMethod")
    assert method.get("Algorithm") == expected


def test_ecdsa_signature_value_is_raw_r_concat_s():
    key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    envelope = signed(XmlDsigSigner(key, keys.self_signed_certificate(key)))
    value = base64.b64decode(envelope.find(f".//{DS}SignatureValue").text)
    assert len(value) == 64
    signed_info = etree.tostring(envelope.find(f".//{DS}SignedInfo"), method="c14n", exclusive=True)
    der = encode_dss_signature(int.from_bytes(value[:32], "big"), int.from_bytes(value[32:], "big"))
    key.public_key().verify(der, signed_info, ec.ECDSA(hashes.SHA256()))


def test_signature_shape(signer):
    signature = signed(signer).find(f"{ENV}CallerInformationSystemSignature/{DS}Signature")
    reference = signature.find(f"{DS}SignedInfo/{DS}Reference")
    assert signature.find(f"{DS}SignedInfo/{DS}CanonicalizationMethod").get("Algorithm") == EXC_C14N
    assert [t.get("Algorithm") for t in reference.iter(f"{DS}Transform")] == [
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature", EXC_C14N]
    assert reference.find(f"{DS}DigestMethod").get("Algorithm") == "http://www.w3.org/2001/04/xmlenc#sha256"
    assert signature.find(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate") is not None


def test_every_signed_text_and_attribute_is_covered(signer, verifier):
    """Pretty-printed on purpose: whitespace between elements is signed too."""
    unsigned = build_envelope(event(), recipient="EPGU", reference_message_id=build_envelope(
        event(), recipient="X1")[0][0][0].text)
    envelope = etree.fromstring(etree.tostring(signer.sign(
        etree.fromstring(etree.tostring(unsigned, pretty_print=True)))))
    verifier.verify(envelope)
    data = envelope[0]
    spots = [(index, kind, name)
             for index, el in enumerate(data.iter())
             for kind, name in ([("text", None)] + ([("tail", None)] if el is not data else [])
                                + [("attr", a) for a in el.attrib])]
    tampered = 0
    for index, kind, name in spots:
        copy_ = copy.deepcopy(envelope)
        el = list(copy_[0].iter())[index]
        if kind == "attr":
            el.set(name, el.get(name) + "x")
        elif getattr(el, kind) is None:
            continue
        else:
            setattr(el, kind, getattr(el, kind) + "x")
        with pytest.raises(SignatureVerificationFault):
            verifier.verify(copy_)
        tampered += 1
    assert tampered > 20


def test_header_is_signed(signer, verifier):
    envelope = signed(signer)
    envelope.find(f"{ENV}SenderProvidedData/{ENV}Header/{ENV}Recipient").text = "RSMEV"
    with pytest.raises(SignatureVerificationFault, match="digest"):
        verifier.verify(envelope)


def test_unsigned_envelope_is_refused(verifier):
    with pytest.raises(SignatureVerificationFault, match="exactly one ds:Signature, found 0"):
        verifier.verify(build_envelope(event(), recipient="EPGU"))


# --- signature wrapping -----------------------------------------------------------------------------

def _forged(envelope: etree._Element) -> etree._Element:
    data = copy.deepcopy(envelope[0])
    data.find(f".//{ENV}Recipient").text = "EVIL"
    return data


def wrap_original_in_object(envelope):
    """Forged block in place, the signed original hidden in a ds:Object."""
    original = envelope[0]
    envelope.insert(0, _forged(envelope))
    obj = etree.SubElement(envelope.find(f".//{DS}Signature"), f"{DS}Object")
    obj.append(original)


def wrap_original_after_signature(envelope):
    """Forged block first, the signed original appended at the end."""
    original = envelope[0]
    envelope.insert(0, _forged(envelope))
    envelope.append(original)


def wrap_id_moved_to_original_copy(envelope):
    """Forged block without Id first; an exact copy of the signed block deeper down carries the Id."""
    forged = _forged(envelope)
    del forged.attrib["Id"]
    original = envelope[0]
    envelope.replace(original, forged)
    forged.find(f"{ENV}MessagePrimaryContent").append(original)


def duplicate_id_elsewhere(envelope):
    envelope[0].find(f"{ENV}MessagePrimaryContent").set("Id", envelope[0].get("Id"))


def id_moved_to_event(envelope):
    data = envelope[0]
    data.find(f"{ENV}MessagePrimaryContent")[0].set("Id", data.attrib.pop("Id"))


def nested_envelope(envelope):
    """The whole signed envelope tucked inside a new one with forged data."""
    outer = copy.deepcopy(envelope)
    outer.replace(outer[0], _forged(envelope))
    etree.SubElement(outer.find(f".//{DS}Signature"), f"{DS}Object").append(copy.deepcopy(envelope))
    return outer


def second_signature(envelope):
    envelope[1].append(copy.deepcopy(envelope[1][0]))


def signature_outside_container(envelope):
    envelope.append(envelope[1][0])
    envelope.remove(envelope[1])


def foreign_root(envelope):
    wrapper = etree.Element("{urn:evil}Wrapper")
    wrapper.append(copy.deepcopy(envelope))
    return wrapper


def extra_transform(envelope):
    transforms = envelope.find(f".//{DS}Transforms")
    etree.SubElement(transforms, f"{DS}Transform", Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116")


def repeated_transform(envelope):
    transform = envelope.find(f".//{DS}Transform")
    transform.addnext(copy.deepcopy(transform))


def inclusive_c14n(envelope):
    envelope.find(f".//{DS}CanonicalizationMethod").set("Algorithm",
                                                          "http://www.w3.org/TR/2001/REC-xml-c14n-20010315")


def reference_elsewhere(envelope):
    envelope.find(f".//{DS}Reference").set("URI", "#other")
    envelope[0].find(f"{ENV}Header").set("Id", "other")


def empty_reference(envelope):
    envelope.find(f".//{DS}Reference").set("URI", "")


def second_reference(envelope):
    reference = envelope.find(f".//{DS}Reference")
    reference.addnext(copy.deepcopy(reference))


def object_in_signature(envelope):
    etree.SubElement(envelope.find(f".//{DS}Signature"), f"{DS}Object").text = "x"


def two_certificates(envelope):
    cert = envelope.find(f".//{DS}X509Certificate")
    cert.addnext(copy.deepcopy(cert))


@pytest.mark.parametrize("attack, message", [
    (wrap_original_in_object, "exactly one SenderProvidedData, found 2"),
    (wrap_original_after_signature, "exactly one SenderProvidedData, found 2"),
    (wrap_id_moved_to_original_copy, "exactly one SenderProvidedData, found 2"),
    (duplicate_id_elsewhere, "must occur once in the document, found 2"),
    (id_moved_to_event, "needs an Id"),
    (nested_envelope, "exactly one SenderProvidedData, found 2"),
    (second_signature, "exactly one ds:Signature, found 2"),
    (signature_outside_container, "must sit in the Envelope's CallerInformationSystemSignature"),
    (foreign_root, "root element"),
    (extra_transform, "Transform .*xpath.* is not accepted"),
    (repeated_transform, "transforms must be"),
    (inclusive_c14n, "CanonicalizationMethod .* is not accepted"),
    (reference_elsewhere, "does not point at this envelope's SenderProvidedData"),
    (empty_reference, "does not point at"),
    (second_reference, "must contain \\['CanonicalizationMethod', 'SignatureMethod', 'Reference'\\]"),
    (object_in_signature, "must contain \\['SignedInfo', 'SignatureValue', 'KeyInfo'\\]"),
    (two_certificates, "must contain \\['X509Certificate'\\]"),
])
def test_wrapping_and_shape_attacks_are_refused(signer, verifier, attack, message):
    envelope = signed(signer)
    replaced = attack(envelope)
    envelope = envelope if replaced is None else replaced
    with pytest.raises(SignatureVerificationFault, match=message):
        verifier.verify(etree.fromstring(etree.tostring(envelope)))


def test_signature_made_over_another_element_is_refused(pair, verifier):
    """signxml signs the event itself (a valid XML-DSig); the envelope's data stays unsigned."""
    envelope = build_envelope(event(), recipient="EPGU")
    content = envelope[0][1][0]
    content.set("Id", "just-the-event")
    container = etree.SubElement(envelope, f"{ENV}CallerInformationSystemSignature")
    etree.SubElement(container, f"{DS}Signature", Id="placeholder")
    key, cert = pair
    algorithm = "ecdsa-sha256" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa-sha256"
    forged = XMLSigner(signature_algorithm=algorithm, digest_algorithm="sha256", c14n_algorithm=EXC_C14N).sign(
        envelope, key=key, cert=[cert], reference_uri="#just-the-event")
    with pytest.raises(SignatureVerificationFault, match="does not point at this envelope's SenderProvidedData"):
        verifier.verify(forged)


# --- algorithms -------------------------------------------------------------------------------------

def test_unaccepted_signature_method_is_refused(signer, verifier):
    envelope = signed(signer)
    envelope.find(f".//{DS}SignatureMethod").set("Algorithm", RSA_SHA1)
    with pytest.raises(SignatureVerificationFault, match="SignatureMethod .*rsa-sha1.* is not accepted"):
        verifier.verify(envelope)


def test_method_must_fit_the_certificate_key(signer, verifier):
    envelope = signed(signer)
    method = envelope.find(f".//{DS}SignatureMethod")
    method.set("Algorithm", RSA_SHA256 if method.get("Algorithm") == ECDSA_SHA256 else ECDSA_SHA256)
    with pytest.raises(SignatureVerificationFault, match="does not fit"):
        verifier.verify(envelope)


def test_options_narrow_the_accepted_methods(signer, pair):
    only = RSA_SHA256 if signer.method == ECDSA_SHA256 else ECDSA_SHA256
    with pytest.raises(SignatureVerificationFault, match="is not accepted"):
        Verifier([pair[1]], options=VerifierOptions(signature_methods=frozenset({only}))).verify(signed(signer))


def test_bad_digest_and_value_are_refused(signer, verifier):
    envelope = signed(signer)
    envelope.find(f".//{DS}SignatureValue").text = "not base64!"
    with pytest.raises(SignatureVerificationFault, match="SignatureValue is not base64"):
        verifier.verify(envelope)
    envelope = signed(signer)
    value = envelope.find(f".//{DS}SignatureValue")
    raw = bytearray(base64.b64decode(value.text))
    raw[-1] ^= 1
    value.text = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SignatureVerificationFault, match="SignatureValue does not verify"):
        verifier.verify(envelope)


# --- trust --------------------------------------------------------------------------------------------

def test_certificate_in_the_message_is_not_trusted_by_itself(pair):
    """Same subject, same algorithm, another key: carried in KeyInfo, still refused."""
    intruder_key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    intruder = XmlDsigSigner(intruder_key, keys.self_signed_certificate(intruder_key))
    with pytest.raises(SignatureVerificationFault, match="neither pinned nor issued by a trusted CA"):
        Verifier([pair[1]]).verify(signed(intruder))


def _ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca, *, days=(-1, 30), usage=True):
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "school system")]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now + timedelta(days=days[0])).not_valid_after(now + timedelta(days=days[1])))
    if not usage:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
    return XmlDsigSigner(key, builder.sign(ca_key, hashes.SHA256()))


def test_certificate_issued_by_a_configured_ca_is_trusted():
    ca = _ca("ejx test CA")
    assert Verifier([ca[1]]).verify(signed(_leaf(ca))).certificate.issuer == ca[1].subject


def test_certificate_from_a_lookalike_ca_is_refused():
    """Same CA name, different key: the issuer name alone proves nothing."""
    with pytest.raises(SignatureVerificationFault, match="neither pinned nor issued"):
        Verifier([_ca("ejx test CA")[1]]).verify(signed(_leaf(_ca("ejx test CA"))))


def test_expired_and_not_yet_valid_certificates_are_refused():
    ca = _ca("ejx test CA")
    for days in ((-30, -1), (1, 30)):
        with pytest.raises(SignatureVerificationFault, match="outside its validity period"):
            Verifier([ca[1]]).verify(signed(_leaf(ca, days=days)))


def test_certificate_not_for_signatures_is_refused():
    ca = _ca("ejx test CA")
    with pytest.raises(SignatureVerificationFault, match="not for signatures"):
        Verifier([ca[1]]).verify(signed(_leaf(ca, usage=False)))


def test_from_pem_files_reads_bundles(tmp_path, pair):
    other = keys.self_signed_certificate(keys.generate_key(keys.KeyAlgorithm.ECDSA))
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(pem(other) + pem(pair[1]))
    verifier = Verifier.from_pem_files([bundle])
    verifier.verify(signed(XmlDsigSigner(*pair)))


def test_verifier_needs_trust(tmp_path):
    with pytest.raises(Failure, match="at least one trusted certificate"):
        Verifier([])
    with pytest.raises(Failure, match="cannot read certificate file"):
        Verifier.from_pem_files([tmp_path / "missing.pem"])


# --- signer -------------------------------------------------------------------------------------------

def test_signer_signs_once(signer):
    envelope = signer.sign(build_envelope(event(), recipient="EPGU"))
    with pytest.raises(InvalidContent, match="already signed"):
        signer.sign(envelope)


def test_signer_refuses_mismatched_or_unsupported_keys(pair):
    other = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    with pytest.raises(Failure, match="does not match"):
        XmlDsigSigner(other, pair[1])
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(Failure, match="no signature method"):
        XmlDsigSigner(p384, keys.self_signed_certificate(p384))


def test_signer_refuses_envelopes_it_cannot_sign_safely(signer):
    envelope = build_envelope(event(), recipient="EPGU")
    envelope.append(copy.deepcopy(envelope[0]))
    with pytest.raises(InvalidContent, match="exactly one SenderProvidedData"):
        signer.sign(envelope)


def test_signer_from_pem_files(tmp_path):
    key_path, cert_path = keys.write_dev_pair(tmp_path, algorithm=keys.KeyAlgorithm.RSA)
    signer = XmlDsigSigner.from_pem_files(key_path, cert_path)
    Verifier.from_pem_files([cert_path]).verify(signed(signer))
    with pytest.raises(Failure, match="cannot read signing key"):
        XmlDsigSigner.from_pem_files(tmp_path / "nope.key", cert_path)


# --- signxml, an independent implementation ---------------------------------------------------------

def test_signxml_verifies_our_signatures(signer, pair):
    envelope = signed(signer)
    result = XMLVerifier().verify(etree.tostring(envelope), x509_cert=pem(pair[1]), id_attribute="Id",
                                  expect_references=1)
    assert etree.tostring(result.signed_xml, method="c14n", exclusive=True) == \
        etree.tostring(envelope[0], method="c14n", exclusive=True)
    envelope.find(f".//{ENV}Recipient").text = "EVIL"
    with pytest.raises(SignxmlInvalid):
        XMLVerifier().verify(etree.tostring(envelope), x509_cert=pem(pair[1]), id_attribute="Id")


def test_we_verify_signxml_signatures(pair, verifier):
    key, cert = pair
    envelope = build_envelope(event(), recipient="EPGU")
    container = etree.SubElement(envelope, f"{ENV}CallerInformationSystemSignature")
    etree.SubElement(container, f"{DS}Signature", Id="placeholder")
    algorithm = "ecdsa-sha256" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa-sha256"
    by_signxml = XMLSigner(signature_algorithm=algorithm, digest_algorithm="sha256", c14n_algorithm=EXC_C14N).sign(
        envelope, key=key, cert=[cert], reference_uri=f"#{envelope[0].get('Id')}")
    verified = verifier.verify(etree.fromstring(etree.tostring(by_signxml)))
    assert verified.header.recipient == "EPGU"


def test_garbage_certificate_is_a_fault_not_a_crash(signer, verifier):
    envelope = signed(signer)
    envelope.find(f".//{DS}X509Certificate").text = base64.b64encode(b"\x30\x03junk").decode()
    with pytest.raises(SignatureVerificationFault, match="not a usable certificate"):
        verifier.verify(envelope)
