"""Ordered, checksummed SQL migrations, applied by ``ejx db migrate``.

Each set of migrations (production's here; the dev tools keep their own) is a
package of ``NNNN_name.sql`` files recorded under its own component name, so a
developer table never lands in a production database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from broker.domain.faults import Failure
from broker.infra.postgres import session_lock

log = structlog.get_logger(__name__)

MIGRATION_LOCK = 0x656A78  # "ejx": any constant works, as long as every migrating process uses it


@dataclass(frozen=True)
class Migration:
    """One ordered SQL file of a migration set."""

    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationSet:
    """A package of SQL files and the component name they are recorded under."""

    package: str
    component: str

    def migrations(self) -> list[Migration]:
        found = []
        for entry in resources.files(self.package).iterdir():
            if entry.name.endswith(".sql"):
                version, _, rest = entry.name.partition("_")
                found.append(Migration(self.component, int(version), rest.removesuffix(".sql"),
                                       entry.read_text("utf-8")))
        return sorted(found, key=lambda m: m.version)


PRODUCTION = MigrationSet(__name__, "ejx")
"""ejx's own tables: outbox, inbox, registry, analytics."""


def migrations() -> list[Migration]:
    """Production's migrations in order."""
    return PRODUCTION.migrations()


async def migrate(conn: asyncpg.Connection, *sets: MigrationSet) -> list[Migration]:
    """Apply pending migrations of ``sets`` (production's by default), each in its own transaction.

    An advisory lock serialises concurrent callers; a changed checksum of an
    applied migration is refused rather than silently ignored.
    """
    async with session_lock(conn, MIGRATION_LOCK):
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   component text NOT NULL, version integer NOT NULL, name text NOT NULL,
                   checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, version))""")
        applied = {(row["component"], row["version"]): row["checksum"] for row in
                   await conn.fetch("SELECT component, version, checksum FROM schema_migrations")}
        done = []
        for migration in (m for s in (sets or (PRODUCTION,)) for m in s.migrations()):
            key = (migration.component, migration.version)
            if key in applied:
                if applied[key] != migration.checksum:
                    raise Failure(f"migration {migration.component} {migration.version:04d}_{migration.name} was "
                                  "changed after it was applied; add a new migration instead")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4)",
                    migration.component, migration.version, migration.name, migration.checksum)
            log.info("db.migrated", component=migration.component, version=migration.version, name=migration.name)
            done.append(migration)
        return done
