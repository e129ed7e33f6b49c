"""Rewrite the envelope examples: ``.venv/bin/python schemas/examples/envelopes/regenerate.py``.

Valid examples are ``<type>-{unsigned,signed}.xml``; every other file is named
``<FaultCode>--<what is wrong>.xml`` and must fail ``ejx verify`` with that code
(``tests/unit/test_xml_cli.py`` checks each). Signed ones use the TEST-ONLY key
in ``keys/``, created here once; the attacks are applied after signing, as an
attacker would. MessageIDs and timestamps are fixed so that a regeneration
changes only signature values.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml import XMLSigner

from broker.ops import logs
from broker.xml import hardened
from broker.xml.envelope import (
    ENVELOPE_NS,
    EVENTS_NS,
    SIGNATURE_CONTAINER,
    MessageType,
    build_envelope,
)
from broker.xml.signing import DS_NS, EXC_C14N, XmlDsigSigner, keys

HERE = Path(__file__).resolve().parent
EVENTS = HERE.parent / "events"
KEY, CERT = HERE / "keys" / "TEST-ONLY-ecdsa.key", HERE / "keys" / "TEST-ONLY-ecdsa.crt"
ENV, DS, EV = f"{{{ENVELOPE_NS}}}", f"{{{DS_NS}}}", f"{{{EVENTS_NS}}}"
SENT = datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=timezone(timedelta(hours=3)))


def message_id(n: int) -> uuid.UUID:
    """A fixed version-1 UUID per example."""
    return uuid.UUID(f"0e6c{n:04x}-00b5-11f0-9c2b-0242ac120002")


def events() -> dict[str, etree._Element]:
    """XML core's main valid example of each event type (``valid/<Type>.xml``)."""
    return {path.stem: hardened.parse(path.read_bytes()) for path in sorted((EVENTS / "valid").glob("*.xml"))
            if "-" not in path.stem}


def test_signer() -> XmlDsigSigner:
    if not KEY.exists():
        key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
        cert = keys.self_signed_certificate(key, options=keys.DevCertificateOptions(
            common_name="ejx TEST-ONLY example signer (public, never trust it)",
            valid_days=30 * 365))
        KEY.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        CERT.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return XmlDsigSigner.from_pem_files(KEY, CERT)


def main() -> None:
    logs.configure("warning")
    signer = test_signer()
    by_type = events()
    made: dict[str, etree._Element] = {}

    def envelope(n: int, event: str, **fields) -> etree._Element:
        return build_envelope(by_type[event], recipient=fields.pop("recipient", "EPGU"), message_id=message_id(n),
                              sending_timestamp=SENT, **fields)

    def sign(element: etree._Element) -> etree._Element:
        return signer.sign(copy.deepcopy(element))

    kinds = {
        "request": envelope(1, "GradePosted", message_type=MessageType.REQUEST),
        "response": envelope(2, "GradeCorrected", message_type=MessageType.RESPONSE,
                             reference_message_id=message_id(1), recipient="RSMEV"),
        "broadcast": envelope(3, "AttendanceMarked", message_type=MessageType.BROADCAST, test=True),
    }
    for kind, unsigned in kinds.items():
        made[f"{kind}-unsigned"] = unsigned
        made[f"{kind}-signed"] = sign(unsigned)

    # Content faults: validly signed by a trusted sender, wrong inside.
    two = envelope(10, "GradePosted")
    two.find(f".//{ENV}MessagePrimaryContent").append(copy.deepcopy(by_type["AttendanceMarked"]))
    made["InvalidContent--two-primary-contents"] = sign(two)
    v4 = envelope(12, "GradePosted")
    v4.find(f".//{ENV}MessageID").text = "6f1c2d4e-8a9b-4c3d-9e8f-0a1b2c3d4e5f"
    made["InvalidContent--message-id-not-version-1"] = sign(v4)
    broken = envelope(13, "GradePosted")
    etree.SubElement(broken.find(f".//{ENV}MessagePrimaryContent")[0], f"{EV}NotInTheSchema").text = "x"
    made["InvalidContent--event-breaks-its-schema"] = sign(broken)
    unknown = envelope(14, "GradePosted")
    content = unknown.find(f".//{ENV}MessagePrimaryContent")
    content.replace(content[0], etree.Element(f"{EV}GradeDeleted"))
    made["UnknownMessageType--unknown-event-type"] = sign(unknown)

    # Signature faults: what an attacker or a broken peer produces.
    base = sign(envelope(20, "GradePosted"))

    def attacked(name: str, attack) -> None:
        victim = copy.deepcopy(base)
        made[f"SignatureVerificationFault--{name}"] = attack(victim) or victim

    attacked("tampered-mark", tamper_mark)
    attacked("tampered-recipient", lambda e: e.find(f".//{ENV}Recipient").__setattr__("text", "RSMEV"))
    attacked("wrapping-second-sender-data", wrap_second_sender_data)
    attacked("wrapping-original-after-signature", wrap_original_after_signature)
    attacked("wrapping-duplicate-id", lambda e: e.find(f".//{ENV}MessagePrimaryContent").set("Id", e[0].get("Id")))
    attacked("two-signatures", lambda e: e[1].append(copy.deepcopy(e[1][0])))
    attacked("signature-method-rsa-sha1", lambda e: e.find(f".//{DS}SignatureMethod").set(
        "Algorithm", "http://www.w3.org/2000/09/xmldsig#rsa-sha1"))
    stranger = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    made["SignatureVerificationFault--untrusted-certificate"] = XmlDsigSigner(
        stranger, keys.self_signed_certificate(stranger)).sign(envelope(21, "GradePosted"))
    only_event = envelope(22, "GradePosted")
    only_event.find(f".//{ENV}MessagePrimaryContent")[0].set("Id", "event-only")
    made["SignatureVerificationFault--reference-to-event-only"] = signed_by_signxml(only_event, "event-only")
    # The DESIGN picture read literally: Header beside the signed block, so MessageID and Recipient are unsigned.
    outside = envelope(23, "GradePosted")
    outside.insert(0, outside.find(f".//{ENV}Header"))
    made["SignatureVerificationFault--header-outside-signed-block"] = signed_by_signxml(outside, outside[1].get("Id"))

    for path in HERE.glob("*.xml"):
        path.unlink()
    for name, element in sorted(made.items()):
        (HERE / f"{name}.xml").write_bytes(hardened.to_bytes(element) + b"\n")
        print(f"{name}.xml")


def tamper_mark(envelope: etree._Element) -> None:
    """Change the five-point mark after signing: the fraud the signature exists to stop."""
    mark = envelope.find(f".//{ENV}MessagePrimaryContent//{EV}FivePoint")
    if mark is None:
        raise SystemExit("the GradePosted example has no FivePoint mark to tamper with")
    mark.text = "2" if mark.text != "2" else "5"


def wrap_second_sender_data(envelope: etree._Element) -> None:
    """Forged data where the receiver reads it; the signed original hidden in a ds:Object."""
    original = envelope[0]
    forged = copy.deepcopy(original)
    tamper_mark(_holder(forged))
    envelope.insert(0, forged)
    etree.SubElement(envelope.find(f".//{DS}Signature"), f"{DS}Object").append(original)


def wrap_original_after_signature(envelope: etree._Element) -> None:
    original = envelope[0]
    forged = copy.deepcopy(original)
    tamper_mark(_holder(forged))
    envelope.insert(0, forged)
    envelope.append(original)


def _holder(data: etree._Element) -> etree._Element:
    """A throwaway envelope around ``data`` so tamper_mark can find the content."""
    holder = etree.Element(f"{ENV}Envelope")
    holder.append(data)
    return holder


def signed_by_signxml(envelope: etree._Element, reference_id: str) -> etree._Element:
    """A valid XML-DSig made by signxml (which, unlike ejx, signs whatever it is pointed at)."""
    etree.SubElement(etree.SubElement(envelope, SIGNATURE_CONTAINER), f"{DS}Signature", Id="placeholder")
    return XMLSigner(signature_algorithm="ecdsa-sha256", digest_algorithm="sha256", c14n_algorithm=EXC_C14N).sign(
        envelope, key=keys.load_private_key(KEY), cert=keys.load_certificates(CERT), reference_uri=f"#{reference_id}")


if __name__ == "__main__":
    main()
