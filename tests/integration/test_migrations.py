"""Migrations against a real PostgreSQL: ordered, recorded, idempotent."""

from __future__ import annotations

import asyncpg
import pytest

from broker.devtools.migrations import RECEIVER_TABLES
from broker.infra.migrations import PRODUCTION, migrate, migrations
from broker.infra.postgres import UnitOfWork

pytestmark = pytest.mark.postgres

SCHEMA_QUERY = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = 'public'
ORDER BY table_name, column_name
"""
INDEX_QUERY = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname"


async def test_migrations_applied_twice_leave_the_same_schema(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        before = (await conn.fetch(SCHEMA_QUERY), await conn.fetch(INDEX_QUERY))
        assert await migrate(conn, PRODUCTION, RECEIVER_TABLES) == []
        after = (await conn.fetch(SCHEMA_QUERY), await conn.fetch(INDEX_QUERY))
        recorded = [row["version"] for row in await conn.fetch(
            "SELECT version FROM schema_migrations WHERE component = 'ejx' ORDER BY 1")]
    finally:
        await conn.close()
    assert before == after
    assert recorded == [m.version for m in migrations()]
    tables = {row["table_name"] for row in before[0]}
    assert {"outbox", "inbox", "vendors", "schools", "schema_migrations"} <= tables


async def test_outbox_refuses_a_second_row_for_the_same_message_and_destination(db_pool: asyncpg.Pool) -> None:
    insert = ("INSERT INTO outbox (message_id, destination, partition_key, payload) "
              "VALUES ('6f1c2a34-0f0e-11ef-9a2b-0242ac120002', 'portal', 'school-1', $1)")
    await db_pool.execute(insert, b"<a/>")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db_pool.execute(insert, b"<a/>")


async def test_unit_of_work_rolls_back_unless_committed(db_pool: asyncpg.Pool) -> None:
    insert = "INSERT INTO inbox (consumer, idempotency_key, event_id) VALUES ('router', $1, gen_random_uuid())"
    async with UnitOfWork(db_pool) as uow:
        await uow.connection.execute(insert, "vendor:rec-1:1")
    async with UnitOfWork(db_pool) as uow:
        await uow.connection.execute(insert, "vendor:rec-2:1")
        await uow.commit()
    with pytest.raises(RuntimeError):
        async with UnitOfWork(db_pool) as uow:
            await uow.connection.execute(insert, "vendor:rec-3:1")
            raise RuntimeError("crash before commit")
    keys = [row["idempotency_key"] for row in await db_pool.fetch("SELECT idempotency_key FROM inbox ORDER BY 1")]
    assert keys == ["vendor:rec-2:1"]
