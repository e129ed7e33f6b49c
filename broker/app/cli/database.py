"""``ejx db migrate``: production's schema, applied in order."""

from __future__ import annotations

import asyncio

import click

from broker.infra.migrations import Migration, migrate
from broker.infra.postgres import connect
from broker.settings import Settings


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("migrate")
@click.pass_obj
def migrate_command(settings: Settings) -> None:
    """Apply the repo's migrations in order (idempotent)."""

    async def run() -> list[Migration]:
        conn = await connect(settings)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    click.echo(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.version:04d} {m.name}" for m in applied))


commands = [db_group]
