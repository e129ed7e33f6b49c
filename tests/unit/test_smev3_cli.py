"""``ejx keys init --algorithm gost2012-256``, ``ejx verify`` over SMEV 3 messages and ``ejx smev3 transform``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization

from broker.app.cli import main
from broker.smev3 import codec
from broker.smev3.codec import Version
from broker.xml import hardened
from broker.xml.signing import GOST_2012_256, SigningKey, gost, keys, sign_reference
from broker.xml.smev_transform import transform_bytes

V12 = Version.V1_2
CONTENT = b'<d:DiaryRequest xmlns:d="urn://ejx/diary/1.0"><d:StudentId>42</d:StudentId></d:DiaryRequest>'


@pytest.fixture
def ejx(tmp_path):
    runner = CliRunner()

    def run(*args: str | Path) -> Result:
        return runner.invoke(main, [str(a) for a in args],
                             env={"EJX_STATE_DIR": str(tmp_path / "state"), "EJX_LOG_LEVEL": "warning"})
    return run


def fault_line(result: Result, code: str) -> str:
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"{code}: "), result.stderr
    return lines[0]


@pytest.fixture
def gost_dir(ejx, tmp_path) -> Path:
    result = ejx("keys", "init", "--algorithm", "gost2012-256", "--dir", tmp_path / "gost")
    assert result.exit_code == 0, result.stderr
    return tmp_path / "gost"


def message(sender: SigningKey, smev: SigningKey) -> bytes:
    """A GetRequestResponse as a SMEV 3 node serves it: the sender's and SMEV's signatures."""
    data = codec.sender_provided_request_data(V12, message_id=str(uuid.uuid1()), transaction_code="TX-1",
                                              content=hardened.parse_trusted(CONTENT))
    meta = codec.Metadata(data[0].text, "BROADCAST", ("EJX", "ejx"), datetime.now(UTC))
    envelope = codec.answer(V12, "GetRequest", codec.request_message(V12, data, meta, "reply-to"))
    request = envelope.find(f".//{{{V12.types}}}Request")
    codec.attach_signature(request, "SenderInformationSystemSignature", sign_reference(request[0], sender))
    codec.attach_signature(request.getparent(), "SMEVSignature", sign_reference(request, smev))
    return codec.to_bytes(envelope)


def test_keys_init_writes_a_gost_pair_that_signs(ejx, gost_dir):
    key = SigningKey.from_pem_files(gost_dir / keys.KEY_FILE, gost_dir / keys.CERT_FILE)
    assert key.algorithm == GOST_2012_256 and "NOT FOR PRODUCTION" in key.subject
    assert gost.GostCertificate.from_der(key.certificate_der).is_gost
    assert (gost_dir / keys.KEY_FILE).stat().st_mode & 0o777 == 0o600
    again = ejx("keys", "init", "--algorithm", "gost2012-256", "--dir", gost_dir)
    assert "refusing to overwrite" in fault_line(again, "Failure")


def test_verify_names_every_signature_of_a_smev3_message(ejx, gost_dir, tmp_path):
    sender = SigningKey.from_pem_files(gost_dir / keys.KEY_FILE, gost_dir / keys.CERT_FILE)
    key_pem, cert_pem = gost.generate_key_and_certificate("SMEV 3 node")
    smev = SigningKey.from_pem(key_pem, cert_pem)
    (tmp_path / "msg.xml").write_bytes(message(sender, smev))

    result = ejx("verify", tmp_path / "msg.xml")
    assert result.exit_code == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.startswith(f"#SIGNED_BY_CALLER SenderProvidedRequestData: {GOST_2012_256} by CN=ejx development")
    assert second.startswith(f"#SIGNED_BY_SMEV Request: {GOST_2012_256} by CN=SMEV 3 node (serial ")

    (tmp_path / "both.pem").write_bytes((gost_dir / keys.CERT_FILE).read_bytes() + cert_pem)
    assert ejx("verify", tmp_path / "msg.xml", "--trust", tmp_path / "both.pem").exit_code == 0
    line = fault_line(ejx("verify", tmp_path / "msg.xml", "--trust", gost_dir / keys.CERT_FILE),
                      "SignatureVerificationFault")
    assert "signature 2 of 2 (in SMEVSignature): signer CN=SMEV 3 node" in line and "is not in" in line

    tampered = (tmp_path / "msg.xml").read_bytes().replace(b">42<", b">43<")
    (tmp_path / "tampered.xml").write_bytes(tampered)
    line = fault_line(ejx("verify", tmp_path / "tampered.xml"), "SignatureVerificationFault")
    assert "signature 1 of 2 (in SenderInformationSystemSignature): digest of SenderProvidedRequestData" in line

    body = hardened.parse(tampered.replace(b">43<", b">42<"))[0][0]  # the GetRequestResponse element alone
    (tmp_path / "body.xml").write_bytes(hardened.to_bytes(body))
    assert ejx("verify", tmp_path / "body.xml").stdout.count("\n") == 2


def test_verify_at_accepts_an_archived_message_whose_certificate_expired(ejx, tmp_path):
    key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    certificate = keys.self_signed_certificate(key, options=keys.DevCertificateOptions(valid_days=30),
                                               not_before=datetime(2021, 6, 1, tzinfo=UTC))
    pem = lambda k, c: (k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # noqa: E731
                                        serialization.NoEncryption()), c.public_bytes(serialization.Encoding.PEM))
    archived = SigningKey.from_pem(*pem(key, certificate))
    (tmp_path / "archive.xml").write_bytes(message(archived, archived))

    line = fault_line(ejx("verify", tmp_path / "archive.xml"), "SignatureVerificationFault")
    assert "matches, but certificate" in line and "is valid only 2021-05-31T23:55:00Z .. 2021-06-30" in line
    result = ejx("verify", tmp_path / "archive.xml", "--at", "2021-06-07T08:31:00+03:00")
    assert result.exit_code == 0 and result.stdout.count("\n") == 2, result.stderr
    assert ejx("verify", tmp_path / "archive.xml", "--at", "2021-06-07T08:31:00").exit_code == 0
    # Without a zone, Moscow time: 02:00 there is 23:00 UTC the day before, ahead of the certificate.
    assert fault_line(ejx("verify", tmp_path / "archive.xml", "--at", "2021-06-01T02:00:00"),
                      "SignatureVerificationFault")
    assert fault_line(ejx("verify", tmp_path / "archive.xml", "--at", "2021-07-07"), "SignatureVerificationFault")
    assert ejx("verify", tmp_path / "archive.xml", "--at", "last week").exit_code == 2  # a usage error


def test_verify_refuses_a_document_without_signatures(ejx, tmp_path):
    (tmp_path / "plain.xml").write_bytes(CONTENT)
    assert "holds no ds:Signature" in fault_line(ejx("verify", tmp_path / "plain.xml"), "SignatureVerificationFault")


def test_smev3_transform_prints_the_octets_a_digest_is_taken_over(ejx, tmp_path):
    document = ('<?xml version="1.0" encoding="UTF-8"?>\n<?pi drop me?>\n<a:Root xmlns:a="urn://a" '
                'xmlns:unused="urn://u" z="1" a:y="2">\n  <b:Leaf xmlns:b="urn://b"/>\n  <a:T>«5» &amp; &gt;</a:T>'
                '\n</a:Root>').encode()
    (tmp_path / "doc.xml").write_bytes(document)
    result = ejx("smev3", "transform", tmp_path / "doc.xml")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == transform_bytes(document)
    assert result.stdout_bytes == ('<ns1:Root xmlns:ns1="urn://a" ns1:y="2" z="1"><ns2:Leaf xmlns:ns2="urn://b">'
                                   '</ns2:Leaf><ns1:T>«5» &amp; &gt;</ns1:T></ns1:Root>').encode()
    (tmp_path / "bad.xml").write_bytes(b"<Root>no namespace</Root>")
    assert "has no namespace" in fault_line(ejx("smev3", "transform", tmp_path / "bad.xml"), "InvalidContent")


def test_pull_into_a_directory_it_cannot_create_is_one_failure_line(ejx, tmp_path):
    """A file where the --out directory should be: one line naming the path, before anything is pulled."""
    key_path, cert_path = keys.write_dev_pair(tmp_path / "keys", algorithm=keys.KeyAlgorithm.GOST2012_256)
    (tmp_path / "taken").write_text("not a directory")
    result = ejx("smev3", "pull", "--url", "http://127.0.0.1:1/smev3/1.2", "--key", key_path, "--cert", cert_path,
                 "--once", "--out", tmp_path / "taken" / "inbox")
    assert "taken/inbox" in fault_line(result, "Failure")
