"""What a soak watches: each process's private memory and the size of the tables that grow with traffic.

Memory is ``RssAnon`` from ``/proc/<pid>/status`` (heap and stacks, not shared
libraries or PostgreSQL's shared buffers, which would count once per backend):
what leaks. PostgreSQL's figure adds up the postmaster and all its backends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

MOSCOW = ZoneInfo("Europe/Moscow")
GROWING_TABLES = ("outbox", "inbox", "ingest_keys", "smev_queue", "message_origin", "message_log",
                  "receiver_messages")
"""Tables every event adds rows to; retention must keep the ones ejx owns bounded."""


@dataclass(frozen=True)
class Sample:
    """One look at memory and tables."""

    at: str
    """When, in Moscow time (ISO 8601)."""
    elapsed_s: float
    rss_kib: dict[str, int]
    """Private resident memory by process name."""
    tables: dict[str, dict[str, int]]
    """Per table: rows and bytes (pg_total_relation_size, indexes and TOAST included)."""

    def as_dict(self) -> dict:
        return asdict(self)


def private_rss_kib(pid: int) -> int:
    """RssAnon of one process in KiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def table_sizes(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Rows and bytes of each of :data:`GROWING_TABLES` that exists."""
    out = {}
    for table in GROWING_TABLES:
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            continue
        rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
        size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
        out[table] = {"rows": int(rows), "bytes": int(size)}
    return out


async def sample(dsn: str, pids: dict[str, list[int]], *, elapsed_s: float) -> Sample:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        tables = await table_sizes(conn)
    finally:
        await conn.close()
    return Sample(at=datetime.now(MOSCOW).isoformat(timespec="seconds"), elapsed_s=round(elapsed_s, 1),
                  rss_kib={name: sum(private_rss_kib(pid) for pid in group) for name, group in sorted(pids.items())},
                  tables=tables)
