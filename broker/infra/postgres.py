"""PostgreSQL: connection pool, ordered migrations, and the unit of work.

The unit of work is the only way to write durably: business rows and outbox rows
commit together or not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from types import TracebackType

import asyncpg
import click
import structlog

from broker.domain.faults import Failure
from broker.settings import Settings

log = structlog.get_logger(__name__)

# Any constant works: it only has to be the same for every migrating process.
MIGRATION_LOCK = 0x656A78  # "ejx"


@dataclass(frozen=True)
class Migration:
    """One ordered SQL file from ``broker/migrations``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The repo's migrations in order; file names are ``NNNN_name.sql``."""
    found = []
    for entry in resources.files("broker.infra.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply pending migrations, each in its own transaction; return those applied.

    An advisory lock serialises concurrent callers; a changed checksum of an
    applied migration is refused rather than silently ignored.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())""")
        applied = {row["version"]: row["checksum"]
                   for row in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
        done = []
        for migration in migrations():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise Failure(f"migration {migration.version:04d}_{migration.name} was changed "
                                  "after it was applied; add a new migration instead")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                                   migration.version, migration.name, migration.checksum)
            log.info("db.migrated", version=migration.version, name=migration.name)
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool on the configured database; connection failures become a retriable Failure."""
    try:
        return await asyncpg.create_pool(settings.database_dsn, min_size=min_size, max_size=max_size, timeout=30)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as error:
        raise Failure(f"PostgreSQL at {settings.database_dsn} is unreachable: {error}") from error


@asynccontextmanager
async def connected(settings: Settings, *, max_size: int = 10) -> AsyncIterator[asyncpg.Pool]:
    """A pool for the length of one command or component; closed on exit."""
    pool = await create_pool(settings, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


class UnitOfWork:
    """``async with UnitOfWork(pool) as uow:`` — rolls back unless ``await uow.commit()`` was called."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._committed = False

    async def __aenter__(self) -> UnitOfWork:
        self.connection: asyncpg.Connection = await self._pool.acquire()
        self._transaction = self.connection.transaction()
        await self._transaction.start()
        return self

    async def commit(self) -> None:
        await self._transaction.commit()
        self._committed = True

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if not self._committed:
                await self._transaction.rollback()
        finally:
            await self._pool.release(self.connection)


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("migrate")
@click.pass_obj
def migrate_command(settings: Settings) -> None:
    """Apply the repo's migrations in order (idempotent)."""

    async def run() -> list[Migration]:
        try:
            conn = await asyncpg.connect(settings.database_dsn, timeout=30)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as error:
            raise Failure(f"PostgreSQL at {settings.database_dsn} is unreachable: {error}") from error
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    click.echo(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.version:04d} {m.name}" for m in applied))


commands = [db_group]
