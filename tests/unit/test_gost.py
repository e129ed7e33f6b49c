"""GOST R 34.10-2012 (256) / Streebog-256 through libcrypto + the gost engine, checked against the ``openssl`` CLI.

The CLI with ``-engine gost`` and the published GOST R 34.11-2012 example are
the independent references. ``openssl`` and ``libengine-gost-openssl`` are
required test tools (see ``APT_TEST`` in the Makefile): without them these tests
fail, they never skip, so CI cannot silently lose GOST.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from broker.domain.faults import Failure, InvalidContent, SignatureVerificationFault
from broker.xml.signing import keys
from broker.xml.signing.gost import (
    PACKAGE,
    GostCertificate,
    GostPrivateKey,
    GostSignatureInvalid,
    InvalidGostKey,
    generate_key_and_certificate,
    streebog256,
)


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("the openssl CLI is not installed; it is required for the GOST interop tests")
    probe = subprocess.run([path, "engine", "gost"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"OpenSSL's gost engine is missing ({probe.stderr.strip()}): apt-get install -y {PACKAGE}")
    return path


def run(openssl: str, *args: str | Path) -> bytes:
    """Run ``openssl <command> -engine gost ...``; its stdout (the "Engine set" chatter goes to stderr)."""
    command, *rest = args
    done = subprocess.run([openssl, str(command), "-engine", "gost", *map(str, rest)], capture_output=True,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"openssl {command} failed: {done.stderr.decode(errors='replace')}"
    return done.stdout


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[GostPrivateKey, GostCertificate, Path]:
    """An ejx-generated key and certificate, and a directory holding them as key.pem / cert.pem."""
    directory = tmp_path_factory.mktemp("gost")
    key_pem, cert_pem = generate_key_and_certificate("ejx GOST test")
    (directory / "key.pem").write_bytes(key_pem)
    (directory / "cert.pem").write_bytes(cert_pem)
    return GostPrivateKey.from_pem(key_pem), GostCertificate.from_pem(cert_pem), directory


@pytest.fixture(scope="module")
def openssl_key(openssl, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("openssl") / "key.pem"
    run(openssl, "genpkey", "-algorithm", "gost2012_256", "-pkeyopt", "paramset:A", "-out", path)
    return path


def test_streebog256_gives_the_standards_example_1():
    # GOST R 34.11-2012 (and RFC 6986, 10.1) write messages and hashes as numbers whose least
    # significant byte is the first byte: M1 = 0x3231...3130 is the ASCII text "0123...012" (63 bytes),
    # and H(M1) = 0x00557be5...1e159d is the digest 9d 15 1e ... 55 00 as the bytes come out.
    m1 = bytes.fromhex("32313039383736353433323130393837363534333231303938373635343332"
                       "3130393837363534333231303938373635343332313039383736353433323130")[::-1]
    assert m1 == b"012345678901234567890123456789012345678901234567890123456789012"
    standard_h256 = "00557be5e584fd52a449b16b0251d05d27f94ab76cbaa6da890b59d8ef1e159d"
    assert streebog256(m1) == bytes.fromhex(standard_h256)[::-1]


@pytest.mark.parametrize("size", [0, 1, 31, 32, 63, 64, 65, 1500, 100_000])
def test_streebog256_equals_openssl_dgst(openssl, tmp_path, size):
    data = os.urandom(size)
    (tmp_path / "data").write_bytes(data)
    run(openssl, "dgst", "-md_gost12_256", "-binary", "-out", tmp_path / "digest", tmp_path / "data")
    assert streebog256(data) == (tmp_path / "digest").read_bytes()


# Byte order: `openssl dgst -sign` writes the engine's raw 64 bytes (s, then r, each big-endian), and so
# does GostPrivateKey.sign. That is also exactly what SMEV 3 puts in ds:SignatureValue: the real SMEV
# test-environment signatures verify under the engine with no reversal (checked during development; the
# byte-reversed and half-swapped variants are refused). So signatures pass between ejx and the CLI as they are.

def test_openssl_verifies_ejx_signatures(openssl, pair, tmp_path):
    key, _, directory = pair
    data = b"<ds:SignedInfo>" + os.urandom(1500)
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "pub.pem").write_bytes(run(openssl, "x509", "-in", directory / "cert.pem", "-pubkey", "-noout"))
    first, second = key.sign(data), key.sign(data)
    assert len(first) == 64 and first != second  # GOST signatures are randomised; both must verify
    for signature in (first, second):
        (tmp_path / "sig.bin").write_bytes(signature)
        verified = run(openssl, "dgst", "-md_gost12_256", "-verify", tmp_path / "pub.pem",
                       "-signature", tmp_path / "sig.bin", tmp_path / "data")
        assert b"Verified OK" in verified


def test_openssl_refuses_an_ejx_signature_of_other_data(openssl, pair, tmp_path):
    key, _, directory = pair
    (tmp_path / "data").write_bytes(b"what was sent")
    (tmp_path / "sig.bin").write_bytes(key.sign(b"what was signed"))
    (tmp_path / "pub.pem").write_bytes(run(openssl, "x509", "-in", directory / "cert.pem", "-pubkey", "-noout"))
    done = subprocess.run([openssl, "dgst", "-engine", "gost", "-md_gost12_256", "-verify", tmp_path / "pub.pem",
                           "-signature", tmp_path / "sig.bin", tmp_path / "data"], capture_output=True)
    assert done.returncode != 0 and b"Verified OK" not in done.stdout


def test_ejx_verifies_openssl_signatures_and_signs_with_openssl_keys(openssl, openssl_key, tmp_path):
    data = os.urandom(32)
    (tmp_path / "data").write_bytes(data)
    run(openssl, "req", "-new", "-x509", "-key", openssl_key, "-md_gost12_256", "-subj", "/CN=openssl signer",
        "-days", "2", "-out", tmp_path / "cert.pem")
    run(openssl, "dgst", "-md_gost12_256", "-sign", openssl_key, "-out", tmp_path / "sig.bin", tmp_path / "data")
    certificate = GostCertificate.from_pem((tmp_path / "cert.pem").read_bytes())
    assert certificate.is_gost and certificate.subject == "CN=openssl signer"
    certificate.verify(data, (tmp_path / "sig.bin").read_bytes())

    key = GostPrivateKey.from_pem(openssl_key.read_bytes())  # a key from `openssl genpkey ... paramset:A`
    certificate.verify(data, key.sign(data))
    (tmp_path / "sig.bin").write_bytes(key.sign(data))
    assert b"Verified OK" in run(openssl, "dgst", "-md_gost12_256", "-prverify", openssl_key,
                                 "-signature", tmp_path / "sig.bin", tmp_path / "data")


def test_tampered_data_signatures_and_other_keys_are_refused(pair):
    key, certificate, _ = pair
    data = os.urandom(1500)
    signature = key.sign(data)
    certificate.verify(data, signature)
    _, other_pem = generate_key_and_certificate("someone else")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    cases = [(certificate, data[:-1] + bytes([data[-1] ^ 1]), signature), (certificate, data, flipped),
             (certificate, data, signature[::-1]), (certificate, data, signature[32:] + signature[:32]),
             (certificate, data, signature[:63]), (certificate, data, b""),
             (GostCertificate.from_pem(other_pem), data, signature)]
    for who, what, value in cases:
        with pytest.raises(GostSignatureInvalid) as refused:
            who.verify(what, value)
        assert isinstance(refused.value, SignatureVerificationFault)
    certificate.verify(data, signature)  # refusals leave nothing behind in OpenSSL's error queue


def test_generated_certificate_reads_back(openssl, pair):
    _, certificate, directory = pair
    assert certificate.is_gost
    assert certificate.subject == "CN=ejx GOST test"
    shown = run(openssl, "x509", "-in", directory / "cert.pem", "-noout", "-serial").decode()
    assert int(shown.strip().removeprefix("serial="), 16) == certificate.serial_number > 0
    now = datetime.now(UTC)
    assert certificate.not_before.tzinfo is UTC and certificate.not_after.tzinfo is UTC
    assert certificate.not_before <= now < certificate.not_before + timedelta(minutes=10)
    assert certificate.not_after - certificate.not_before == timedelta(days=365)
    assert GostCertificate.from_der(certificate.der).serial_number == certificate.serial_number
    usage = certificate.x509.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    assert usage.digital_signature and not usage.key_cert_sign
    # the self-signature checks out under the engine: X509_sign used Streebog and the right key
    run(openssl, "verify", "-partial_chain", "-check_ss_sig", "-CAfile", directory / "cert.pem",
        directory / "cert.pem")


def test_generation_honours_days_and_paramset(openssl, tmp_path):
    key_pem, cert_pem = generate_key_and_certificate("short", days=2, paramset="B")
    certificate = GostCertificate.from_pem(cert_pem)
    assert certificate.not_after - certificate.not_before == timedelta(days=2)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    assert b"CryptoPro-B" in run(openssl, "x509", "-in", tmp_path / "cert.pem", "-noout", "-text")
    certificate.verify(b"x", GostPrivateKey.from_pem(key_pem).sign(b"x"))
    with pytest.raises(ValueError, match="paramset"):
        generate_key_and_certificate("bad", paramset="Z")


def test_encrypted_keys_need_their_password_and_never_prompt(openssl, openssl_key, tmp_path):
    encrypted = tmp_path / "encrypted.pem"
    run(openssl, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", openssl_key, "-passout", "pass:secret",
        "-out", encrypted)
    key = GostPrivateKey.from_pem(encrypted.read_bytes(), password=b"secret")
    reference = GostPrivateKey.from_pem(openssl_key.read_bytes())
    assert len(key.sign(b"x")) == 64 and len(reference.sign(b"x")) == 64
    for password in (None, b"wrong"):
        with pytest.raises(InvalidGostKey):
            GostPrivateKey.from_pem(encrypted.read_bytes(), password=password)


def test_non_gost_keys_and_certificates():
    ec_key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    ec_cert = keys.self_signed_certificate(ec_key)
    certificate = GostCertificate.from_pem(ec_cert.public_bytes(serialization.Encoding.PEM))
    assert not certificate.is_gost  # readable, so a verifier can route it elsewhere, but it verifies nothing
    with pytest.raises(GostSignatureInvalid):
        certificate.verify(b"x", b"\0" * 64)
    ec_pem = ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    for pem in (ec_pem, b"not a key"):
        with pytest.raises(InvalidGostKey) as refused:
            GostPrivateKey.from_pem(pem)
        assert isinstance(refused.value, InvalidContent)
    with pytest.raises(InvalidGostKey):
        GostCertificate.from_der(b"\x30\x03\x02\x01\x00")


def test_signing_and_verifying_from_many_threads(pair):
    key, certificate, _ = pair
    failures: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(200):
                data = f"{seed}:{i}".encode() * 40
                certificate.verify(data, key.sign(data))
                assert streebog256(data) == streebog256(bytes(data))
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_missing_engine_is_a_clear_failure_naming_the_package(tmp_path):
    # OPENSSL_ENGINES points libcrypto at an empty directory: the engine cannot be found.
    env = {**os.environ, "OPENSSL_ENGINES": str(tmp_path)}
    script = ("from broker.xml.signing import gost\n"
              "try:\n    gost.streebog256(b'')\n"
              "except gost.GostUnavailable as e:\n"
              "    assert isinstance(e, gost.Failure)\n    print(e)\n    raise SystemExit(3)\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert PACKAGE in done.stdout and "gost" in done.stdout
    assert issubclass(InvalidGostKey, InvalidContent) and not issubclass(InvalidGostKey, Failure)
