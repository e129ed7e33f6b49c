"""Signed archives of the message log: written from PostgreSQL, verified offline, every tampering named."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization

from broker.audit import message_log
from broker.audit.archive import MANIFEST, RECORDS, SIGNATURE, verify_archives
from broker.audit.manifest import ManifestSigner
from broker.domain.faults import Failure, InvalidContent
from broker.xml.signing import keys
from tests.integration.message_log_support import (
    append_committed,
    as_superuser_without_triggers,
    entries,
)

pytestmark = pytest.mark.postgres


def _pair(algorithm=keys.KeyAlgorithm.ECDSA):
    key = keys.generate_key(algorithm)
    certificate = keys.self_signed_certificate(key)
    return ManifestSigner(key, certificate), certificate


@pytest.fixture(scope="module")
def ejx():
    return _pair()


async def _archives(pool, signer, directory: Path, *sizes: int) -> list[Path]:
    """One archive per size: append that many records, archive everything so far."""
    paths = []
    for number, size in enumerate(sizes, start=1):
        await append_committed(pool, entries(size))
        path = directory / f"log-{number}.tar"
        await message_log.archive(pool, until=datetime.now(UTC), out=path, signer=signer)
        paths.append(path)
    return paths


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _rewrite(path: Path, **replaced: bytes) -> None:
    """Rebuild the tar with some members' contents replaced (keys: manifest, signature, records)."""
    names = {"manifest": MANIFEST, "signature": SIGNATURE, "records": RECORDS}
    members = _members(path) | {names[k]: v for k, v in replaced.items()}
    path.unlink()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _verify(paths, certificate):
    return verify_archives(paths, trusted=[certificate])


async def test_archives_verify_offline_and_link_in_order(db_pool, ejx, tmp_path) -> None:
    signer, certificate = ejx
    paths = await _archives(db_pool, signer, tmp_path, 30, 7, 12)
    verdict = _verify(paths, certificate)
    assert (verdict.checked, verdict.broken) == (49, None)
    assert [(a.manifest.number, a.manifest.first_sequence, a.manifest.last_sequence) for a in verdict.archives] == [
        (1, 1, 30), (2, 31, 37), (3, 38, 49)]
    rows = await db_pool.fetch("SELECT number, last_sequence, manifest_sha256 FROM message_log_archives ORDER BY 1")
    assert [(r["number"], r["last_sequence"], r["manifest_sha256"]) for r in rows] == [
        (a.manifest.number, a.manifest.last_sequence, a.manifest_sha256) for a in verdict.archives]
    second = json.loads(_members(paths[1])[MANIFEST])
    assert second["previous_archive"] == verdict.archives[0].manifest_sha256.hex()
    assert _verify(paths[1:], certificate).broken is None, "a run of archives may start after the first"
    assert await message_log.archive(db_pool, until=datetime.now(UTC), out=tmp_path / "empty.tar",
                                     signer=signer) is None
    assert not (tmp_path / "empty.tar").exists()


async def test_a_changed_byte_inside_an_archive_names_its_record(db_pool, ejx, tmp_path) -> None:
    signer, certificate = ejx
    (path,) = await _archives(db_pool, signer, tmp_path, 20)
    data = bytearray(path.read_bytes())
    start = data.index(b'{"sequence":13,')
    at = data.index(b'"payload":"', start) + len(b'"payload":"') + 20
    data[at] = ord("B") if data[at] != ord("B") else ord("C")  # still valid base64: different bytes
    path.write_bytes(bytes(data))
    broken = _verify([path], certificate).broken
    assert (broken.sequence, broken.where) == (13, "log-1.tar") and "payload" in broken.reason

    data[data.index(b'"participant":"EPGU"', data.index(b'{"sequence":5,')) + 16] = ord("X")
    path.write_bytes(bytes(data))
    broken = _verify([path], certificate).broken
    assert broken.sequence == 5 and "record hash" in broken.reason


async def test_a_record_deleted_from_an_archive_is_named(db_pool, ejx, tmp_path) -> None:
    signer, certificate = ejx
    (path,) = await _archives(db_pool, signer, tmp_path, 10)
    lines = _members(path)[RECORDS].splitlines(keepends=True)
    _rewrite(path, records=b"".join(lines[:5] + lines[6:]))
    broken = _verify([path], certificate).broken
    assert broken.sequence == 6 and "missing" in broken.reason

    _rewrite(path, records=b"".join(lines[:9]))  # the last one
    broken = _verify([path], certificate).broken
    assert broken.sequence == 10 and "should end at record 10" in broken.reason


async def test_archives_out_of_order_or_with_one_missing_are_detected(db_pool, ejx, tmp_path) -> None:
    signer, certificate = ejx
    first, second, third = await _archives(db_pool, signer, tmp_path, 4, 5, 6)

    broken = _verify([second, first], certificate).broken
    assert (broken.sequence, broken.where) == (1, "log-1.tar") and "out of order" in broken.reason
    broken = _verify([first, third], certificate).broken
    assert (broken.sequence, broken.where) == (10, "log-3.tar") and "does not follow archive 1" in broken.reason
    verdict = _verify([first, second, second], certificate)
    assert verdict.broken.sequence == 5 and [a.manifest.number for a in verdict.archives] == [1, 2]


async def test_a_forged_manifest_is_refused(db_pool, ejx, tmp_path) -> None:
    signer, certificate = ejx
    first, second = await _archives(db_pool, signer, tmp_path, 3, 3)
    original = _members(second)
    manifest = json.loads(original[MANIFEST])

    edited = original[MANIFEST].replace(b'"records": 3', b'"records": 2')
    assert edited != original[MANIFEST]
    _rewrite(second, manifest=edited)
    broken = _verify([first, second], certificate).broken
    assert (broken.sequence, broken.where) == (None, "log-2.tar") and "does not verify" in broken.reason

    mallory, mallory_certificate = _pair()
    as_mallory = json.dumps({**manifest, "signer_certificate_sha256": mallory.certificate_sha256}).encode()
    _rewrite(second, manifest=as_mallory, signature=mallory.sign(as_mallory))
    assert "not trusted" in _verify([first, second], certificate).broken.reason
    assert _verify([second], mallory_certificate).broken is None, "trust is the verifier's, not the archive's"

    naming_ejx = json.dumps(manifest).encode()
    _rewrite(second, manifest=naming_ejx, signature=mallory.sign(naming_ejx))
    assert "does not verify" in _verify([first, second], certificate).broken.reason

    _rewrite(second, manifest=original[MANIFEST], signature=_members(first)[SIGNATURE])
    assert "does not verify" in _verify([second], certificate).broken.reason


@pytest.mark.parametrize("forged", [b"[" * 100_000, b"[]", b'"a manifest"'])
async def test_a_manifest_or_record_line_that_is_not_one_is_a_break_not_a_crash(db_pool, ejx, tmp_path,
                                                                                  forged: bytes) -> None:
    signer, certificate = ejx
    (path,) = await _archives(db_pool, signer, tmp_path, 5)
    original = _members(path)
    lines = original[RECORDS].splitlines(keepends=True)
    _rewrite(path, records=b"".join([*lines[:2], forged + b"\n", *lines[3:]]))
    broken = _verify([path], certificate).broken
    assert (broken.sequence, broken.where) == (3, "log-1.tar") and "not a readable record" in broken.reason

    _rewrite(path, records=original[RECORDS], manifest=forged)
    broken = _verify([path], certificate).broken
    assert (broken.sequence, broken.where) == (None, "log-1.tar")


@pytest.mark.parametrize("algorithm", [a for a in keys.KeyAlgorithm if not a.is_gost])  # manifests: RSA or ECDSA
async def test_a_manifest_verifies_with_openssl_alone(db_pool, tmp_path, algorithm) -> None:
    signer, certificate = _pair(algorithm)
    (path,) = await _archives(db_pool, signer, tmp_path, 2)
    members = _members(path)
    for name in (MANIFEST, SIGNATURE):
        (tmp_path / name).write_bytes(members[name])
    (tmp_path / "ejx.pub").write_bytes(certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    run = subprocess.run(["openssl", "dgst", "-sha256", "-verify", "ejx.pub", "-signature", SIGNATURE, MANIFEST],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and "Verified OK" in run.stdout, run.stderr


async def test_archive_refuses_to_sign_a_broken_chain_or_overwrite_a_file(db_pool: asyncpg.Pool, ejx,
                                                                          tmp_path) -> None:
    signer, _ = ejx
    await append_committed(db_pool, entries(5))
    (tmp_path / "taken.tar").write_bytes(b"operator's file")
    with pytest.raises(Failure, match="never overwritten"):
        await message_log.archive(db_pool, until=datetime.now(UTC), out=tmp_path / "taken.tar", signer=signer)
    assert (tmp_path / "taken.tar").read_bytes() == b"operator's file"

    await as_superuser_without_triggers(db_pool, "UPDATE message_log SET payload = 'x' WHERE sequence = 3")
    with pytest.raises(InvalidContent, match="record 3"):
        await message_log.archive(db_pool, until=datetime.now(UTC), out=tmp_path / "a.tar", signer=signer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.tar"]
    assert await db_pool.fetchval("SELECT count(*) FROM message_log_archives") == 0


async def test_one_archive_at_a_time(db_pool: asyncpg.Pool, db_settings, ejx, tmp_path) -> None:
    """A second `ejx log archive` is refused while one runs (its session holds the archive lock) and writes
    nothing; once the first is done the lock is free again."""
    signer, _ = ejx
    await append_committed(db_pool, entries(3))
    running = await asyncpg.connect(db_settings.database_dsn)
    try:
        assert await running.fetchval("SELECT pg_try_advisory_lock($1)", message_log.ARCHIVE_LOCK)
        with pytest.raises(Failure, match="another `ejx log archive` is running"):
            await message_log.archive(db_pool, until=datetime.now(UTC), out=tmp_path / "a.tar", signer=signer)
        assert not (tmp_path / "a.tar").exists()
    finally:
        await running.close()
    summary = await message_log.archive(db_pool, until=datetime.now(UTC), out=tmp_path / "a.tar", signer=signer)
    assert summary.manifest.records == 3
    assert await db_pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())") == 0
