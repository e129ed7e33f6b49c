"""What the server is told about each session ejx opens: how it detects a client gone silent."""

from __future__ import annotations

import asyncpg
import pytest

from broker.infra.postgres import connect, create_pool

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
