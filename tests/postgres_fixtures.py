"""PostgreSQL fixtures: every test gets a fresh, migrated database of its own.

A missing PostgreSQL fails the test (never skips it): the suite's integration
tier means nothing without the real thing. So does, in CI, a missing PostgreSQL
server for the tests that run (and kill) a cluster of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from broker.devtools.infra import postgres as local_postgres
from broker.devtools.migrations import RECEIVER_TABLES
from broker.infra.migrations import PRODUCTION, migrate
from broker.infra.postgres import create_pool
from broker.settings import Settings


def _with_database(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


async def _admin(settings: Settings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(settings.database_dsn, timeout=15)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        pytest.fail(f"PostgreSQL at {settings.database_dsn} is unreachable ({error}); "
                    "run `ejx infra up` or set EJX_DATABASE_URL", pytrace=False)


@pytest.fixture
def postgres_server() -> Path:
    """Debian's PostgreSQL server binaries, for tests that start and kill a throwaway cluster. Missing, they fail
    the test in CI (``CI=true``, as ``.ci/run`` sets it) and skip it elsewhere: a developer may run the suite on
    ``EJX_DATABASE_URL`` alone, but CI must not count a crash test it never ran as passed."""
    found = local_postgres.find_bin_dir()
    if found is None:
        reason = f"Debian's PostgreSQL server is not installed (apt-get install -y {local_postgres.DEBIAN_PACKAGE})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


@pytest.fixture
async def database_url(settings: Settings) -> AsyncIterator[str]:
    """DSN of a new database with every migration applied; dropped afterwards."""
    name = f"ejx_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin(settings)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = _with_database(settings.database_dsn, name)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn, PRODUCTION, RECEIVER_TABLES)
        finally:
            await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def db_settings(settings: Settings, database_url: str) -> Settings:
    """Settings pointing at the test's own database."""
    return settings.model_copy(update={"database_url": database_url})


@pytest.fixture
async def db_pool(db_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_settings)
    try:
        yield pool
    finally:
        await pool.close()
