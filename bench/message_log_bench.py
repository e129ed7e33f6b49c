"""Chained message-log appends beside a raw batched INSERT of the same rows: ``python -m bench.message_log_bench``.

    .venv/bin/python -m bench.message_log_bench [--writers 2] [--batches 6] [--batch-size 500] [--payload 3000]

``--writers`` concurrent writers each commit ``--batches`` transactions of
``--batch-size`` records (payloads of ``--payload`` bytes, about a signed
envelope), as the router does, in the same run:

* raw: one ``INSERT … SELECT FROM unnest(…)`` per batch into a copy of the
  table (same columns, primary key and indexes, no triggers), hashes computed
  beforehand, no head row: what storing the rows costs by itself;
* chained: :func:`broker.audit.message_log.append` per batch — lock the head
  row, seal the batch (SHA-256 of every payload and record), one insert that
  also moves the head, the lock held until the commit.

Then the chain is verified (:func:`broker.audit.message_log.verify`) and
archived into a signed file (:func:`broker.audit.message_log.archive`), in
records/s. Uses the configured PostgreSQL and a scratch database it drops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table

from broker.audit import message_log
from broker.audit.chain import Direction, Entry, Kind
from broker.audit.manifest import ManifestSigner
from broker.devtools.scratch import create_database, drop_database, scratch_name
from broker.infra.postgres import UnitOfWork, create_pool
from broker.ops import logs
from broker.settings import Settings
from broker.xml.signing import keys

console = Console()
RAW_INSERT = """INSERT INTO message_log_raw (sequence, recorded_at, direction, participant, message_id, kind,
                                              payload_sha256, previous_hash, record_hash, payload)
                SELECT s, now(), d, p, m, k, ph, pv, rh, b
                FROM unnest($1::bigint[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::bytea[], $7::bytea[],
                            $8::bytea[], $9::bytea[]) AS t(s, d, p, m, k, ph, pv, rh, b)"""


def batches(writers: int, count: int, size: int, payload: int) -> list[list[list[Entry]]]:
    """Per writer, ``count`` batches of ``size`` distinct entries."""
    filler = os.urandom(payload // 2).hex().encode()
    return [[[Entry(Direction.OUT, "EPGU" if i % 3 else "RSMEV", uuid.uuid4(), Kind.ENVELOPE,
                    b"<Envelope n='%d'>" % i + filler + b"</Envelope>") for i in range(size)]
             for _ in range(count)] for _ in range(writers)]


async def raw_run(pool: asyncpg.Pool, work: list[list[list[Entry]]]) -> float:
    """Seconds for every writer to commit its batches as plain inserts."""
    columns = []
    sequence = 0
    for writer in work:
        mine = []
        for batch in writer:
            ids = list(range(sequence + 1, sequence + len(batch) + 1))
            sequence += len(batch)
            mine.append((ids, [str(e.direction) for e in batch], [e.participant for e in batch],
                         [e.message_id for e in batch], [str(e.kind) for e in batch],
                         [hashlib.sha256(e.payload).digest() for e in batch], [bytes(32)] * len(batch),
                         [bytes(32)] * len(batch), [e.payload for e in batch]))
        columns.append(mine)

    async def writer(mine) -> None:
        for batch in mine:
            async with UnitOfWork(pool) as uow:
                await uow.connection.execute(RAW_INSERT, *batch)
                await uow.commit()
    started = time.perf_counter()
    await asyncio.gather(*(writer(mine) for mine in columns))
    return time.perf_counter() - started


async def chained_run(pool: asyncpg.Pool, work: list[list[list[Entry]]]) -> float:
    """Seconds for every writer to commit its batches through the message log."""
    async def writer(mine) -> None:
        for batch in mine:
            async with UnitOfWork(pool) as uow:
                await message_log.append(uow.connection, batch)
                await uow.commit()
    started = time.perf_counter()
    await asyncio.gather(*(writer(mine) for mine in work))
    return time.perf_counter() - started


async def main(writers: int, count: int, size: int, payload: int) -> None:
    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run: the loggers write to it
    with contextlib.redirect_stderr(sink):
        logs.configure("info", json=True)
    base = Settings()
    database = scratch_name()
    dsn = await create_database(base, database)
    try:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE message_log_raw (LIKE message_log INCLUDING ALL)")
        await conn.close()
        pool = await create_pool(base.model_copy(update={"database_url": dsn}), max_size=writers + 2)
        try:
            await raw_run(pool, batches(1, 1, 50, payload))  # warm the connections and the plans
            await pool.execute("TRUNCATE message_log_raw")
            raw_s = await raw_run(pool, batches(writers, count, size, payload))
            chained_s = await chained_run(pool, batches(writers, count, size, payload))
            started = time.perf_counter()
            verdict = await message_log.verify(pool)
            verify_s = time.perf_counter() - started
            key = keys.generate_key(keys.KeyAlgorithm.ECDSA)
            signer = ManifestSigner(key, keys.self_signed_certificate(key))
            with tempfile.TemporaryDirectory() as directory:
                started = time.perf_counter()
                await message_log.archive(pool, until=datetime.now(UTC), out=Path(directory) / "bench.tar",
                                          signer=signer)
                archive_s = time.perf_counter() - started
        finally:
            await pool.close()
    finally:
        await drop_database(base, database)
    total = writers * count * size
    if verdict.broken is not None or verdict.checked != total:
        raise SystemExit(f"chain broken after the bench: {verdict.broken} ({verdict.checked} of {total} checked)")

    table = Table(title=f"message log: {writers} writers × {count} batches × {size} records, {payload}-byte payloads")
    for column in ("path", "records/s", "elapsed"):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_row("raw batched INSERT (no chain)", f"{total / raw_s:.0f}", f"{raw_s:.2f} s")
    table.add_row("message_log.append (chained)", f"{total / chained_s:.0f}", f"{chained_s:.2f} s")
    table.add_row("verify (live table)", f"{total / verify_s:.0f}", f"{verify_s:.2f} s")
    table.add_row("archive (signed tar)", f"{total / archive_s:.0f}", f"{archive_s:.2f} s")
    console.print(table)
    console.print(f"ratio chained / raw append throughput: {raw_s / chained_s:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=6, help="Transactions per writer.")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--payload", type=int, default=3000, help="Bytes per payload, about a signed envelope.")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.writers, arguments.batches, arguments.batch_size, arguments.payload))
