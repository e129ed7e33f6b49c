"""The message log in PostgreSQL: appends on the writer's own transaction, verification, archives, retention.

Writers append on the connection of their unit of work, so a message is in the
log exactly when the transaction that signed or accepted it committed:
``await message_log.append(uow.connection, entries)``, one call per batch.

Locking: a chain needs a total order, and a writer's transaction may still roll
back. So :func:`append` locks the single ``message_log_head`` row (``FOR
UPDATE``), chains the batch onto it and moves it forward; the row lock is held
until the writer's transaction ends — the next writer must see this batch's
last hash, or a gap if it rolled back, and only a commit can tell it which.
Appends therefore serialise from the append statement to the commit: writers
append as their LAST statement before committing (the router does), and one
statement carries the whole batch. Committed records are always the prefix
1…N of the chain, which is what lets archives take "everything up to T".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import structlog

from broker.audit.archive import ArchiveWriter
from broker.audit.chain import GENESIS, Break, ChainCheck, Entry, Head, Record, seal
from broker.audit.manifest import ArchiveSummary, ManifestSigner
from broker.domain.faults import Failure
from broker.infra.postgres import rows_affected, session_lock

log = structlog.get_logger(__name__)

ARCHIVE_LOCK = 0x656A786C6F67  # "ejxlog": one `ejx log archive` at a time
_COLUMNS = ("sequence", "recorded_at", "direction", "participant", "message_id", "kind", "payload_sha256",
            "previous_hash", "record_hash", "payload")
_LOCK_HEAD = """SELECT last_sequence, last_hash, last_recorded_at, clock_timestamp() AS now
                FROM message_log_head FOR UPDATE"""
_APPEND = f"""WITH appended AS (
                  INSERT INTO message_log ({", ".join(_COLUMNS)})
                  SELECT s, $2::timestamptz, d, p, m, k, ph, pv, rh, b
                  FROM unnest($1::bigint[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::bytea[],
                              $8::bytea[], $9::bytea[], $10::bytea[]) AS t(s, d, p, m, k, ph, pv, rh, b))
              UPDATE message_log_head SET last_sequence = $11, last_hash = $12, last_recorded_at = $2"""


async def append(conn: asyncpg.Connection, entries: Sequence[Entry]) -> list[Record]:
    """Chain ``entries`` onto the log on ``conn``'s transaction (one is opened if there is none).

    Two round trips whatever the batch size: lock the head, insert every record and move the
    head in one statement. The head stays locked until the transaction ends (see the module doc).
    """
    if not entries:
        return []
    if not conn.is_in_transaction():
        async with conn.transaction():
            return await append(conn, entries)
    head = await conn.fetchrow(_LOCK_HEAD)
    records = seal(entries, after=Head(head["last_sequence"], head["last_hash"], head["last_recorded_at"]),
                   at=head["now"])
    columns = list(zip(*((r.sequence, r.direction, r.participant, r.message_id, r.kind, r.payload_sha256,
                          r.previous_hash, r.record_hash, r.payload) for r in records)))
    await conn.execute(_APPEND, columns[0], records[0].recorded_at, *columns[1:],
                       records[-1].sequence, records[-1].record_hash)
    return records


def _unlike_files(rows: Sequence[asyncpg.Record], files: Sequence[ArchiveSummary]) -> Break | None:
    """The first of the table's newest archive rows that is not the archive file in its place."""
    if len(rows) < len(files):
        return Break(None, f"the table registers {len(rows)} archive(s), fewer than the {len(files)} file(s) given")
    for row, file in zip(rows[len(rows) - len(files):], files, strict=True):
        m = file.manifest
        if (row["number"], row["first_sequence"], row["last_sequence"], bytes(row["manifest_sha256"])) != (
                m.number, m.first_sequence, m.last_sequence, file.manifest_sha256):
            return Break(row["first_sequence"], f"archive row {row['number']} (records {row['first_sequence']}…"
                         f"{row['last_sequence']}) is not the file {file.name} (archive {m.number}, records "
                         f"{m.first_sequence}…{m.last_sequence}): registered without that signed file")
    return None


@dataclass(frozen=True)
class LiveVerdict:
    """The outcome of verifying the table."""

    checked: int
    """Records found sound."""
    head: Head
    """The end of the chain according to ``message_log_head``."""
    broken: Break | None


async def verify(pool: asyncpg.Pool, *, on_start: Callable[[int], None] = lambda total: None,
                 on_progress: Callable[[int], None] = lambda n: None, chunk: int = 2000,
                 held_against: Sequence[ArchiveSummary] = ()) -> LiveVerdict:
    """Re-compute every record in the table, in one consistent snapshot, and name the first break.

    The table's own archive rows tell where its chain starts; anyone who can write the table could
    add one and then delete the records it claims. ``held_against`` (archive files verified already,
    in order) closes that: the table's newest archive rows must be exactly those files (number,
    sequences, the SHA-256 of their signed manifests), or the first that differs is the break.

    The chain starts at record 1, or, once retention has deleted records, right after the
    last archive whose records are gone. A stopped or running prune may have deleted an
    archive only in part: its remaining rows are then checked from the first one's previous
    hash, and must reach the last hash the archive recorded (its file proves the rows before).
    The chain must end where the head row says, and the last hash of every archive still in
    the table must match it.
    """
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow("SELECT last_sequence, last_hash FROM message_log_head")
        head = Head(row["last_sequence"], row["last_hash"])
        archives = await conn.fetch("SELECT number, first_sequence, last_sequence, last_record_hash, manifest_sha256 "
                                    "FROM message_log_archives ORDER BY number")
        if held_against:
            mismatch = _unlike_files(archives, held_against)
            if mismatch is not None:
                return LiveVerdict(0, head, mismatch)
        archived = {r["last_sequence"]: r["last_record_hash"] for r in archives}
        first = await conn.fetchval("SELECT min(sequence) FROM message_log")
        boundary = max((r["last_sequence"] for r in archives if first is None or r["first_sequence"] < first),
                       default=0)
        if first is not None and first <= boundary:  # pruned in part: its rows left continue its chain
            boundary = first - 1
            anchor = Head(boundary, await conn.fetchval(
                "SELECT previous_hash FROM message_log WHERE sequence = $1", first))
        else:
            anchor = Head(boundary, archived.get(boundary, GENESIS))
        check = ChainCheck(anchor)
        on_start(max(head.sequence - boundary, 0))
        broken, pending = None, 0
        async for record in _records(conn, after=boundary, until=head.sequence + 1, chunk=chunk):
            broken = check.feed(record)
            if broken is None and archived.get(record.sequence, record.record_hash) != record.record_hash:
                broken = Break(record.sequence, "hash differs from the one its archive recorded")
            if broken is not None:
                break
            pending += 1
            if pending == chunk:
                on_progress(pending)
                pending = 0
        on_progress(pending)
    broken = broken or check.end(head)
    log.info("message_log.verified", checked=check.checked, last_sequence=head.sequence,
             broken=str(broken) if broken else None)
    return LiveVerdict(check.checked, head, broken)


async def archive(pool: asyncpg.Pool, *, until: datetime, out: Path, signer: ManifestSigner,
                  on_start: Callable[[int], None] = lambda total: None,
                  on_progress: Callable[[int], None] = lambda n: None, chunk: int = 2000) -> ArchiveSummary | None:
    """Write the records recorded up to ``until`` and not archived yet as one signed file at ``out``.

    The file is complete and fsynced before the archive is registered, so a crash in between
    leaves at worst a file the next run re-archives; None when there is nothing to archive.
    """
    async with pool.acquire() as conn, session_lock(conn, ARCHIVE_LOCK, wait=False) as held:
        if not held:
            raise Failure("another `ejx log archive` is running; try again when it has finished")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            last = await conn.fetchrow(
                "SELECT number, last_sequence, last_record_hash, manifest_sha256 FROM message_log_archives "
                "ORDER BY number DESC LIMIT 1")
            after = last["last_sequence"] if last else 0
            end = await conn.fetchval(
                "SELECT max(sequence) FROM message_log WHERE sequence > $1 AND recorded_at <= $2", after, until)
            if end is None:
                log.info("message_log.nothing_to_archive", until=until.isoformat(), archived_to=after)
                return None
            on_start(end - after)
            number = last["number"] + 1 if last else 1
            with ArchiveWriter(out, signer=signer, number=number,
                               anchor=Head(after, last["last_record_hash"] if last else GENESIS),
                               previous_archive=last["manifest_sha256"] if last else None) as writer:
                pending = 0
                async for record in _records(conn, after=after, until=end + 1, chunk=chunk):
                    writer.add(record)
                    pending += 1
                    if pending == chunk:
                        on_progress(pending)
                        pending = 0
                summary = writer.finish()
        on_progress(pending)
        await conn.execute(
            """INSERT INTO message_log_archives (number, first_sequence, last_sequence, last_record_hash,
                                                 last_recorded_at, manifest_sha256, file_name)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            summary.manifest.number, summary.manifest.first_sequence, summary.manifest.last_sequence,
            summary.manifest.last_record_hash, summary.manifest.last_recorded_at, summary.manifest_sha256, str(out))
    manifest = summary.manifest
    log.info("message_log.archived", number=manifest.number, first_sequence=manifest.first_sequence,
             last_sequence=manifest.last_sequence, records=manifest.records, file=str(out),
             manifest_sha256=summary.manifest_sha256.hex())
    return summary


async def prune(pool: asyncpg.Pool, *, older_than: timedelta, chunk: int = 5000) -> int:
    """Delete the records of whole archives whose last record is older than ``older_than``.

    Only archived records, oldest first. Each chunk is its own transaction (the only one
    allowed to delete: it sets ``ejx.message_log_retention``), so a run stopped or still
    going may leave the table starting inside an archive; :func:`verify` allows for that. A
    later run finishes the job. Returns the records deleted.
    """
    bound = await pool.fetchval(
        "SELECT max(last_sequence) FROM message_log_archives WHERE last_recorded_at < now() - $1::interval",
        older_than)
    total = 0
    while bound is not None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL ejx.message_log_retention = 'on'")
            status = await conn.execute(
                """DELETE FROM message_log WHERE sequence IN (
                       SELECT sequence FROM message_log WHERE sequence <= $1 ORDER BY sequence LIMIT $2)""",
                bound, chunk)
        deleted = rows_affected(status)
        total += deleted
        if deleted < chunk:
            break
    log.info("message_log.pruned", records=total, archived_to=bound, older_than_s=older_than.total_seconds())
    return total


async def _records(conn: asyncpg.Connection, *, after: int, until: int, chunk: int) -> AsyncIterator[Record]:
    """Records with ``after < sequence < until`` in order, fetched ``chunk`` at a time (needs a transaction)."""
    async for row in conn.cursor(f"SELECT {', '.join(_COLUMNS)} FROM message_log WHERE sequence > $1 AND "
                                 "sequence < $2 ORDER BY sequence", after, until, prefetch=chunk):
        yield Record(**dict(row))
