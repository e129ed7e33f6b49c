"""Helpers of the message-log tests: entries, appends on a unit of work, and a superuser's trigger bypass."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from broker.audit import message_log
from broker.audit.chain import Direction, Entry, Kind, Record
from broker.infra.postgres import UnitOfWork


def entries(n: int, *, participant: str = "EPGU", kind: Kind = Kind.ENVELOPE, size: int = 200) -> list[Entry]:
    """``n`` entries with distinct MessageIDs and payloads of about ``size`` bytes."""
    out = []
    for _ in range(n):
        message_id = uuid.uuid4()
        payload = f"<Envelope id='{message_id}'>".encode() + b"x" * size + b"</Envelope>"
        out.append(Entry(Direction.OUT, participant, message_id, kind, payload))
    return out


async def append_committed(pool: asyncpg.Pool, batch: Sequence[Entry]) -> list[Record]:
    """Append on a unit of work of its own and commit, as a writer does."""
    async with UnitOfWork(pool) as uow:
        records = await message_log.append(uow.connection, batch)
        await uow.commit()
    return records


async def as_superuser_without_triggers(pool: asyncpg.Pool, sql: str, *args) -> str:
    """What a superuser can do behind the log's back: run ``sql`` with triggers disabled."""
    async with pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")
        try:
            return await conn.execute(sql, *args)
        finally:
            await conn.execute("RESET session_replication_role")
