"""What the server is told about each session ejx opens (how it detects a client gone silent), and what a
session keeps between two uses of a pooled connection (nothing but its settings); how a refused session is told."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg
import pytest

from broker.domain.faults import Failure
from broker.infra.postgres import connect, create_pool, session_lock

pytestmark = pytest.mark.postgres

EXPECTED = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3",
            "tcp_user_timeout": "60000"}


async def shown(conn: asyncpg.Connection) -> dict[str, str]:
    return {name: await conn.fetchval(f"SHOW {name}") for name in EXPECTED}


@pytest.mark.parametrize("maintenance", [False, True])
async def test_pool_sessions_end_within_a_minute_of_a_dead_client(db_settings, maintenance):
    """Keepalives over TCP (the test database is reached over 127.0.0.1, as in production)."""
    pool = await create_pool(db_settings, min_size=2, max_size=2, maintenance=maintenance)
    try:
        async with pool.acquire() as first, pool.acquire() as second:
            assert await shown(first) == EXPECTED
            assert await shown(second) == EXPECTED
    finally:
        await pool.close()


async def test_admin_connections_end_within_a_minute_of_a_dead_client(db_settings):
    conn = await connect(db_settings)
    try:
        assert await shown(conn) == EXPECTED
    finally:
        await conn.close()


LOCK = 0x656A7874  # any key no production code uses


async def held_elsewhere(settings, key: int) -> bool:
    """Whether another session holds the advisory lock ``key``."""
    conn = await connect(settings)
    try:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
            return False
        return True
    finally:
        await conn.close()


async def test_a_released_connection_costs_no_reset_round_trip_and_keeps_no_transaction(db_settings):
    """asyncpg's default reset query (advisory unlock, CLOSE ALL, UNLISTEN *, RESET ALL) is a round trip
    per release; ejx's pools skip it but still end a transaction left open."""
    pool = await create_pool(db_settings, min_size=1, max_size=1)
    queries: list[str] = []
    try:
        async with pool.acquire() as conn:
            raw = conn._con  # the connection behind the pool's proxy, which outlives the release
            raw.add_query_logger(lambda record: queries.append(record.query))
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("CREATE TABLE left_open (n int)")
        assert queries == ["BEGIN;", "CREATE TABLE left_open (n int)", "ROLLBACK"]
        async with pool.acquire() as conn:
            assert conn._con is raw
            assert await conn.fetchval("SELECT to_regclass('left_open')") is None
            assert await conn.fetchval("SHOW tcp_keepalives_idle") == "30"  # the startup settings stay
    finally:
        await pool.close()


async def test_a_session_lock_is_released_on_every_way_out(db_settings):
    pool = await create_pool(db_settings, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            with pytest.raises(RuntimeError):
                async with session_lock(conn, LOCK) as held:
                    assert held and await held_elsewhere(db_settings, LOCK)
                    raise RuntimeError("the work failed")
            assert not await held_elsewhere(db_settings, LOCK)
            blocker = await connect(db_settings)
            try:
                await blocker.execute("SELECT pg_advisory_lock($1)", LOCK)
                async with session_lock(conn, LOCK, wait=False) as held:
                    assert held is False
            finally:
                await blocker.close()
    finally:
        await pool.close()


class UnlockFails:
    """A pooled connection whose advisory unlock fails, as a connection cut or cancelled mid-call would."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, query: str, *args: object) -> str:
        if "pg_advisory_unlock" in query:
            raise OSError("connection reset by peer")
        return await self.conn.execute(query, *args)

    async def fetchval(self, query: str, *args: object) -> object:
        return await self.conn.fetchval(query, *args)

    def terminate(self) -> None:
        self.conn.terminate()


async def test_a_connection_whose_unlock_failed_is_terminated_not_pooled(db_settings):
    """Else the lock would go back into the pool with it, held for whoever acquires it next."""
    pool = await create_pool(db_settings, min_size=1, max_size=1)
    try:
        with pytest.raises(OSError):
            async with pool.acquire() as conn:
                raw = conn._con
                async with session_lock(UnlockFails(conn), LOCK) as held:
                    assert held and await held_elsewhere(db_settings, LOCK)
        assert raw.is_closed()
        assert not await held_elsewhere(db_settings, LOCK)
        async with pool.acquire() as conn:
            assert conn._con is not raw
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_a_missing_database_or_role_is_named_not_called_unreachable(db_settings):
    """The server answered: the Failure says what it refused, so nobody goes looking at the network."""
    url = urlsplit(db_settings.database_dsn)
    stranger = url._replace(netloc="ejx_no_such_role:secret@" + url.netloc.rpartition("@")[2])
    for dsn, reason in ((url._replace(path="/ejx_no_such_database").geturl(),
                         'database "ejx_no_such_database" does not exist'),
                        (stranger.geturl(), "ejx_no_such_role")):
        settings = db_settings.model_copy(update={"database_url": dsn})
        for opening in (connect, create_pool):
            with pytest.raises(Failure) as refused:
                await opening(settings)
            assert "refused the connection" in str(refused.value) and reason in str(refused.value)
            assert "secret" not in str(refused.value)
