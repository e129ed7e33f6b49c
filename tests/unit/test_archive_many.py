"""Verifying more archives than the process may hold open files: one archive file is open at a time."""

from __future__ import annotations

import os
import resource
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.audit.archive import ArchiveWriter, verify_archives
from broker.audit.chain import Direction, Entry, Head, Kind, seal
from broker.audit.manifest import ManifestSigner
from broker.xml.signing import keys

ARCHIVES, RECORDS_EACH = 80, 3


@pytest.fixture(scope="module")
def ejx():
    key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    certificate = keys.self_signed_certificate(key)
    return ManifestSigner(key, certificate), certificate


def _write_chain(directory: Path, signer: ManifestSigner) -> list[Path]:
    """``ARCHIVES`` consecutive archives of ``RECORDS_EACH`` records, linked as `ejx log archive` links them."""
    paths, head, previous = [], Head(), None
    for number in range(1, ARCHIVES + 1):
        batch = [Entry(Direction.OUT, "EPGU", uuid.uuid4(), Kind.ENVELOPE, f"<Envelope n='{number}.{i}'/>".encode())
                 for i in range(RECORDS_EACH)]
        records = seal(batch, after=head, at=datetime.now(UTC))
        path = directory / f"log-{number:03}.tar"
        with ArchiveWriter(path, signer=signer, number=number, anchor=head, previous_archive=previous) as writer:
            for record in records:
                writer.add(record)
            summary = writer.finish()
        paths.append(path)
        last = records[-1]
        head, previous = Head(last.sequence, last.record_hash, last.recorded_at), summary.manifest_sha256
    return paths


def _with_few_open_files(verify):
    """Run ``verify`` with room for fewer new descriptors than there are archives, then restore the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max(64, len(os.listdir("/proc/self/fd")) + 16)
    assert limit - len(os.listdir("/proc/self/fd")) < ARCHIVES <= soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        return verify()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_more_archives_than_open_files_verify(ejx, tmp_path) -> None:
    signer, certificate = ejx
    paths = _write_chain(tmp_path, signer)
    started: list[int] = []

    verdict = _with_few_open_files(lambda: verify_archives(paths, trusted=[certificate], on_start=started.append))

    assert verdict.broken is None, str(verdict.broken)
    assert (verdict.checked, len(verdict.archives), started) == (ARCHIVES * RECORDS_EACH, ARCHIVES,
                                                               [ARCHIVES * RECORDS_EACH])


def test_a_break_in_the_last_of_many_archives_is_named(ejx, tmp_path) -> None:
    signer, certificate = ejx
    paths = _write_chain(tmp_path, signer)
    paths[-1].write_bytes(b"not a tar")

    verdict = _with_few_open_files(lambda: verify_archives(paths, trusted=[certificate]))

    assert (verdict.broken.where, verdict.broken.sequence) == (paths[-1].name, None)
    assert "not a readable archive" in verdict.broken.reason
    assert (verdict.checked, verdict.archives) == (0, []), "every manifest is read before any record is counted"
