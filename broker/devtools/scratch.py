"""Databases of one run (the demo, a bench): made next to the configured one, migrated, dropped afterwards."""

from __future__ import annotations

import uuid

import asyncpg

from broker.devtools.migrations import RECEIVER_TABLES
from broker.infra.migrations import PRODUCTION, migrate
from broker.settings import Settings


def scratch_name(prefix: str = "ejx_bench") -> str:
    """A database name of this run only."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def dsn_of(settings: Settings, name: str) -> str:
    """The DSN of database ``name`` on the configured server."""
    return settings.database_dsn.rpartition("/")[0] + f"/{name}"


async def create_database(settings: Settings, name: str) -> str:
    """A new database ``name`` next to the configured one, with production's and the reference receivers'
    tables; returns its DSN."""
    admin = await asyncpg.connect(settings.database_dsn, timeout=30)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_of(settings, name)
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        await migrate(conn, PRODUCTION, RECEIVER_TABLES)
    finally:
        await conn.close()
    return dsn


async def drop_database(settings: Settings, name: str) -> None:
    """Drop database ``name`` of the configured server, closing whatever still holds it open."""
    admin = await asyncpg.connect(settings.database_dsn, timeout=30)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
