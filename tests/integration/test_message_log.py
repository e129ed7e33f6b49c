"""The message log on a real PostgreSQL: appends, verification of the live table, the triggers, retention."""

from __future__ import annotations

import asyncio
import hashlib
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from broker.audit import message_log
from broker.audit.chain import Direction, Kind, Record, record_hash
from broker.audit.manifest import ManifestSigner
from broker.infra.postgres import UnitOfWork
from broker.xml.signing import keys
from tests.integration.message_log_support import (
    append_committed,
    as_superuser_without_triggers,
    entries,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def manifest_signer() -> ManifestSigner:
    key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
    return ManifestSigner(key, keys.self_signed_certificate(key))


async def test_appended_records_chain_in_the_table_and_verify(db_pool: asyncpg.Pool) -> None:
    first = await append_committed(db_pool, entries(3))
    second = await append_committed(db_pool, entries(4, participant="RSMEV", kind=Kind.SMEV3_RESPONSE))

    rows = await db_pool.fetch("SELECT * FROM message_log ORDER BY sequence")
    assert [r["sequence"] for r in rows] == list(range(1, 8))
    assert [r["record_hash"] for r in rows] == [r.record_hash for r in first + second]
    assert rows[3]["previous_hash"] == first[-1].record_hash
    assert [r["participant"] for r in rows] == ["EPGU"] * 3 + ["RSMEV"] * 4
    assert all(r["direction"] == Direction.OUT and r["recorded_at"].tzinfo is not None for r in rows)
    assert [r["recorded_at"] for r in rows] == sorted(r["recorded_at"] for r in rows)
    head = await db_pool.fetchrow("SELECT last_sequence, last_hash FROM message_log_head")
    assert (head["last_sequence"], head["last_hash"]) == (7, second[-1].record_hash)

    verdict = await message_log.verify(db_pool)
    assert (verdict.checked, verdict.broken) == (7, None)


async def test_a_rolled_back_append_leaves_no_gap(db_pool: asyncpg.Pool) -> None:
    await append_committed(db_pool, entries(2))
    async with UnitOfWork(db_pool) as uow:
        await message_log.append(uow.connection, entries(5))  # not committed
    await append_committed(db_pool, entries(2))
    assert [r["sequence"] for r in await db_pool.fetch("SELECT sequence FROM message_log ORDER BY 1")] == [1, 2, 3, 4]
    assert (await message_log.verify(db_pool)).broken is None


async def test_the_database_refuses_updates_and_deletes(db_pool: asyncpg.Pool) -> None:
    await append_committed(db_pool, entries(3))
    for sql in ("UPDATE message_log SET participant = 'X' WHERE sequence = 2",
                "DELETE FROM message_log WHERE sequence = 3", "TRUNCATE message_log",
                "UPDATE message_log_head SET last_sequence = 1", "DELETE FROM message_log_head"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db_pool.execute(sql)
    async with db_pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ejx.message_log_retention = 'on'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # retention may delete archived records only
            await conn.execute("DELETE FROM message_log WHERE sequence = 1")
    assert await db_pool.fetchval("SELECT count(*) FROM message_log") == 3


async def test_a_changed_payload_byte_in_a_row_is_named(db_pool: asyncpg.Pool) -> None:
    await append_committed(db_pool, entries(10))
    await as_superuser_without_triggers(
        db_pool, "UPDATE message_log SET payload = overlay(payload placing '\\x21'::bytea from 30) WHERE sequence = 7")
    broken = (await message_log.verify(db_pool)).broken
    assert (broken.sequence, broken.where) == (7, "database")
    assert "payload" in broken.reason


async def test_a_changed_field_with_its_payload_hash_recomputed_is_named(db_pool: asyncpg.Pool) -> None:
    await append_committed(db_pool, entries(6))
    await as_superuser_without_triggers(
        db_pool, "UPDATE message_log SET payload = 'forged', payload_sha256 = sha256('forged') WHERE sequence = 4")
    broken = (await message_log.verify(db_pool)).broken
    assert broken.sequence == 4 and "record hash" in broken.reason


async def test_the_last_record_rewritten_with_every_hash_recomputed_is_named_by_the_head(db_pool: asyncpg.Pool) -> None:
    """No later record chains to the last one: only the head row's hash tells that it was rewritten."""
    await append_committed(db_pool, entries(5))
    last = await db_pool.fetchrow("SELECT * FROM message_log WHERE sequence = 5")
    forged = Record(**{**dict(last), "payload": b"forged", "payload_sha256": hashlib.sha256(b"forged").digest()})
    await as_superuser_without_triggers(
        db_pool, "UPDATE message_log SET payload = $1, payload_sha256 = $2, record_hash = $3 WHERE sequence = 5",
        forged.payload, forged.payload_sha256, record_hash(forged))
    verdict = await message_log.verify(db_pool)
    assert verdict.checked == 5, "every record is sound on its own"
    assert verdict.broken.sequence == 5 and "recorded for the end of the chain" in verdict.broken.reason


async def test_a_deleted_record_is_named_in_the_middle_and_at_the_end(db_pool: asyncpg.Pool) -> None:
    await append_committed(db_pool, entries(9))
    await as_superuser_without_triggers(db_pool, "DELETE FROM message_log WHERE sequence = 5")
    broken = (await message_log.verify(db_pool)).broken
    assert broken.sequence == 5 and "missing" in broken.reason

    await as_superuser_without_triggers(db_pool, "DELETE FROM message_log WHERE sequence >= 5")
    broken = (await message_log.verify(db_pool)).broken
    assert broken.sequence == 5 and "should end at record 9" in broken.reason


async def test_retention_deletes_only_whole_archived_archives(db_pool, manifest_signer, tmp_path) -> None:
    await append_committed(db_pool, entries(10))
    await db_pool.execute("SELECT pg_sleep(0.01)")
    cut = datetime.now(UTC)
    await append_committed(db_pool, entries(5))
    assert await message_log.prune(db_pool, older_than=timedelta(0)) == 0, "nothing archived yet"

    summary = await message_log.archive(db_pool, until=cut, out=tmp_path / "a1.tar", signer=manifest_signer)
    assert (summary.manifest.first_sequence, summary.manifest.last_sequence) == (1, 10)
    assert await message_log.prune(db_pool, older_than=timedelta(days=30)) == 0, "archive younger than retention"
    assert await message_log.prune(db_pool, older_than=timedelta(0), chunk=3) == 10

    left = [r["sequence"] for r in await db_pool.fetch("SELECT sequence FROM message_log ORDER BY 1")]
    assert left == list(range(11, 16))
    verdict = await message_log.verify(db_pool)
    assert (verdict.checked, verdict.broken) == (5, None), "the live chain continues from the archive's last hash"


async def test_an_archive_whose_records_were_changed_afterwards_no_longer_matches(db_pool, manifest_signer,
                                                                                  tmp_path) -> None:
    await append_committed(db_pool, entries(4))
    await message_log.archive(db_pool, until=datetime.now(UTC), out=tmp_path / "a1.tar", signer=manifest_signer)
    forged = await db_pool.fetchrow("SELECT * FROM message_log WHERE sequence = 4")
    rehashed = record_hash(Record(**{**dict(forged), "participant": "RSMEV"}))
    await as_superuser_without_triggers(
        db_pool, "UPDATE message_log SET participant = 'RSMEV', record_hash = $1 WHERE sequence = 4", rehashed)
    await as_superuser_without_triggers(db_pool, "UPDATE message_log_head SET last_hash = $1", rehashed)
    broken = (await message_log.verify(db_pool)).broken
    assert broken.sequence == 4 and "archive" in broken.reason


async def test_concurrent_appenders_keep_one_chain(db_pool: asyncpg.Pool) -> None:
    committed = 0

    async def writer(seed: int) -> None:
        nonlocal committed
        rng = random.Random(seed)
        for batch in range(12):
            size = rng.randint(1, 60)
            async with UnitOfWork(db_pool) as uow:
                await message_log.append(uow.connection, entries(size, size=50))
                await asyncio.sleep(rng.random() / 200)  # other work in the same transaction
                if batch % 4 == 3:
                    continue  # rolled back
                await uow.commit()
                committed += size

    await asyncio.gather(*(writer(seed) for seed in range(4)))
    sequences = [r["sequence"] for r in await db_pool.fetch("SELECT sequence FROM message_log ORDER BY 1")]
    assert sequences == list(range(1, committed + 1))
    verdict = await message_log.verify(db_pool, chunk=37)
    assert (verdict.checked, verdict.broken) == (committed, None)
