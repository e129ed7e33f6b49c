"""The ingest ledger: which idempotency keys were accepted, and under which event_id.

Ordering is what makes it safe. Keys are inserted in a PostgreSQL transaction
that stays open while the events are produced, and is committed only after
Kafka acknowledged them:

* Kafka fails → the transaction rolls back → nothing recorded, the vendor retries;
* a concurrent request with the same key blocks on the uncommitted row, then
  sees the committed event_id (or, if we rolled back, claims the key itself);
* a crash after Kafka's ack and before our commit leaves the key unrecorded, so
  the vendor's retry produces the event again — with the same event_id (it is
  derived from the key) and the same key header, which every consumer
  deduplicates on. Nothing lost; nothing doubled once deduplicated.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from broker.domain.faults import Failure
from broker.infra.postgres import UnitOfWork, is_outage


@dataclass(frozen=True)
class LedgerEntry:
    idempotency_key: str
    event_id: uuid.UUID
    source_system: str
    source_record_id: str
    version: int
    event_type: str
    school_id: str


@dataclass
class Claim:
    """The outcome of claiming keys inside the open transaction."""

    fresh: list[LedgerEntry] = field(default_factory=list)
    """Claimed by us: publish these before the transaction commits."""
    known: dict[str, uuid.UUID] = field(default_factory=dict)
    """Accepted before (by key): answer with the stored event_id, publish nothing."""


class IngestLedger:
    """Durable dedup of accepted events in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def claim(self, entries: Sequence[LedgerEntry]) -> AsyncIterator[Claim]:
        """Claim ``entries`` (unique keys) for the body of the ``async with``; commit on success.

        Any exception in the body — above all a Kafka failure — rolls every claim back.
        """
        try:
            async with UnitOfWork(self._pool) as uow:
                conn = uow.connection
                ordered = sorted(entries, key=lambda e: e.idempotency_key)  # one lock order: no deadlocks
                # No conflict target: event_id is unique too (derived from the key), and a racing insert
                # may meet the other claim there first; either way it is the same key, a duplicate.
                claimed = {row["idempotency_key"] for row in await conn.fetch(
                    """INSERT INTO ingest_keys (idempotency_key, event_id, source_system, source_record_id,
                                                version, event_type, school_id)
                       SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[],
                                            $5::bigint[], $6::text[], $7::text[])
                       ON CONFLICT DO NOTHING
                       RETURNING idempotency_key""",
                    [e.idempotency_key for e in ordered], [e.event_id for e in ordered],
                    [e.source_system for e in ordered], [e.source_record_id for e in ordered],
                    [e.version for e in ordered], [e.event_type for e in ordered],
                    [e.school_id for e in ordered])}
                outcome = Claim(fresh=[e for e in entries if e.idempotency_key in claimed])
                others = [e.idempotency_key for e in entries if e.idempotency_key not in claimed]
                if others:
                    rows = await conn.fetch(
                        "SELECT idempotency_key, event_id FROM ingest_keys WHERE idempotency_key = ANY($1::text[])",
                        others)
                    # A plain UUID, not asyncpg's subclass of it: receipts are encoded by orjson, which knows uuid.UUID.
                    outcome.known = {row["idempotency_key"]: uuid.UUID(bytes=row["event_id"].bytes) for row in rows}
                yield outcome
                await uow.commit()
        except Exception as error:
            if not is_outage(error):
                raise
            raise Failure(f"the ingest ledger is unavailable ({type(error).__name__}); try again later") from error

    async def first_versions(self, source_system: str, record_ids: Sequence[str]) -> dict[str, tuple[uuid.UUID, int]]:
        """For each source record seen before: the event_id and version of its first accepted event."""
        rows = await self._pool.fetch(
            """SELECT DISTINCT ON (source_record_id) source_record_id, event_id, version
                 FROM ingest_keys WHERE source_system = $1 AND source_record_id = ANY($2::text[])
                ORDER BY source_record_id, version""",
            source_system, list(record_ids))
        return {row["source_record_id"]: (row["event_id"], row["version"]) for row in rows}
