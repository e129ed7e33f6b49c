"""Verifying the live table while retention is half-way through an archive: sound, and a real gap still named."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from broker.audit import message_log
from broker.audit.archive import verify_archives
from broker.audit.manifest import ManifestSigner
from broker.xml.signing import keys
from tests.integration.message_log_support import append_committed, as_superuser_without_triggers, entries

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def signing_key():  # noqa: ANN201
    return keys.generate_key(keys.KeyAlgorithm.ECDSA)


@pytest.fixture(scope="module")
def signing_certificate(signing_key):  # noqa: ANN001, ANN201
    return keys.self_signed_certificate(signing_key)


@pytest.fixture(scope="module")
def manifest_signer(signing_key, signing_certificate) -> ManifestSigner:  # noqa: ANN001
    return ManifestSigner(signing_key, signing_certificate)


async def _archived(pool: asyncpg.Pool, signer: ManifestSigner, directory, *sizes: int) -> None:
    """One archive per size, each holding the records appended just before it."""
    for number, size in enumerate(sizes, start=1):
        await append_committed(pool, entries(size))
        await message_log.archive(pool, until=datetime.now(UTC), out=directory / f"a{number}.tar", signer=signer)


async def _prune_chunk(pool: asyncpg.Pool, *, through: int) -> None:
    """What one of ``prune``'s chunk transactions does, as if the run stopped right after it."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ejx.message_log_retention = 'on'")
        await conn.execute("DELETE FROM message_log WHERE sequence <= $1", through)


@pytest.mark.parametrize("through", [4, 10, 13, 19])
async def test_a_prune_stopped_inside_an_archive_leaves_a_sound_chain(db_pool, manifest_signer, tmp_path,
                                                                      through) -> None:
    await _archived(db_pool, manifest_signer, tmp_path, 10, 10)  # archives 1…10 and 11…20
    await append_committed(db_pool, entries(5))  # 21…25, not archived
    await _prune_chunk(db_pool, through=through)

    verdict = await message_log.verify(db_pool)
    assert verdict.broken is None, str(verdict.broken)
    assert verdict.head.sequence == 25
    assert verdict.checked == 25 - through, "the rows left of a pruned archive are checked too"


@pytest.mark.parametrize(("tamper", "sequence", "reason"), [
    ("UPDATE message_log SET payload = 'x' WHERE sequence = 7", 7, "payload"),  # a row left of the archive
    ("DELETE FROM message_log WHERE sequence = 11", 11, "missing"),  # the first row after it
], ids=["changed-row-left", "missing-after"])
async def test_tampering_around_a_half_pruned_archive_is_broken(db_pool, manifest_signer, tmp_path, tamper,
                                                                sequence, reason) -> None:
    await _archived(db_pool, manifest_signer, tmp_path, 10)
    await append_committed(db_pool, entries(5))  # 11…15
    await _prune_chunk(db_pool, through=4)
    await as_superuser_without_triggers(db_pool, tamper)

    broken = (await message_log.verify(db_pool)).broken
    assert (broken.sequence, broken.where) == (sequence, "database")
    assert reason in broken.reason


async def test_a_gap_not_covered_by_any_archive_is_broken(db_pool, manifest_signer, tmp_path) -> None:
    await _archived(db_pool, manifest_signer, tmp_path, 10)
    await append_committed(db_pool, entries(5))  # 11…15
    await _prune_chunk(db_pool, through=10)
    await as_superuser_without_triggers(db_pool, "DELETE FROM message_log WHERE sequence <= 12")

    broken = (await message_log.verify(db_pool)).broken
    assert broken.sequence == 11 and "missing (the next record present is 13)" in broken.reason


async def test_records_deleted_from_the_start_of_an_unarchived_log_are_broken(db_pool) -> None:
    await append_committed(db_pool, entries(6))
    await as_superuser_without_triggers(db_pool, "DELETE FROM message_log WHERE sequence <= 2")

    broken = (await message_log.verify(db_pool)).broken
    assert broken.sequence == 1 and "missing" in broken.reason


async def _forge_an_archive_and_delete_what_it_claims(pool: asyncpg.Pool) -> None:
    """What anyone with the app's role can do: register records 11…15 as archived, then let retention go
    (records 1…10 of the real archive with them)."""
    async with pool.acquire() as conn, conn.transaction():
        last = await conn.fetchrow("SELECT record_hash, recorded_at FROM message_log WHERE sequence = 15")
        await conn.execute(
            "INSERT INTO message_log_archives (number, first_sequence, last_sequence, last_record_hash, "
            "last_recorded_at, manifest_sha256, file_name) VALUES (2, 11, 15, $1, $2, $3, 'forged.tar')",
            last["record_hash"], last["recorded_at"], bytes(32))
        await conn.execute("SET LOCAL ejx.message_log_retention = 'on'")
        await conn.execute("DELETE FROM message_log WHERE sequence <= 15")


async def test_an_archive_row_registered_without_its_file_is_a_break_when_held_against_the_files(
        db_pool, manifest_signer, signing_certificate, tmp_path) -> None:
    await _archived(db_pool, manifest_signer, tmp_path, 10)
    await append_committed(db_pool, entries(7))  # 11…17
    files = verify_archives([tmp_path / "a1.tar"], trusted=[signing_certificate]).archives
    sound = await message_log.verify(db_pool, held_against=files)
    assert (sound.broken, sound.checked) == (None, 17)

    await _forge_an_archive_and_delete_what_it_claims(db_pool)
    assert (await message_log.verify(db_pool)).broken is None  # the table alone cannot tell
    broken = (await message_log.verify(db_pool, held_against=files)).broken
    assert (broken.sequence, broken.where) == (11, "database")
    assert "archive row 2 (records 11…15) is not the file a1.tar" in broken.reason
