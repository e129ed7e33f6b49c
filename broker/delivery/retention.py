"""Retention: dedup keys and delivered rows are forgotten once no duplicate can arrive any more.

A dedup key may only go when a duplicate of it can no longer reach its table:

* ``inbox`` (router, analytics): a duplicate comes from Kafka, a redelivery or
  ``ejx replay``; keep keys longer than the events topic's retention (Kafka's
  default 7 days) and the longest replay window;
* ``message_origin``: ``ejx replay --redeliver`` names the first MessageID of an
  event the inbox still knows; kept at least as long as the inbox;
* ``ingest_keys``: a duplicate is a vendor's retry; keep longer than its retry
  window. A record's first and latest versions stay longer (``ingest_records``):
  the OneRoster mapping looks the first up to tell a correction from a first
  posting, and a nightly full sync sends the latest again and again (forgotten,
  it would be produced anew and, once the router's inbox forgot it too, reach
  the receivers under a new MessageID). Only versions in between go early;
* delivered ``outbox`` rows and acknowledged ``smev_queue`` envelopes: nothing
  reads them after delivery; kept for operators. Pending and dead rows never go.

Each sweep deletes in batches of short statements on the pool (no transaction
spans batches), so neither the relay's claim nor the writers wait behind it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog

from broker.infra.backoff import pause
from broker.infra.postgres import is_outage, rows_affected
from broker.ops import metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetentionOptions:
    """How long each kind of row is kept, and how the sweep paces itself."""

    outbox: timedelta = timedelta(days=7)
    """Delivered outbox rows and acknowledged SMEV queue envelopes."""
    inbox: timedelta = timedelta(days=30)
    """Consumers' dedup keys; above the events topic's retention and any replay window."""
    ingest_keys: timedelta = timedelta(days=7)
    """The ingest dedup window for versions between a record's first and latest; above the vendors' retry
    window."""
    ingest_records: timedelta = timedelta(days=400)
    """A source record's first and latest versions; as long as a correction may follow or a full sync may
    resend them (at least ``ingest_keys``)."""
    message_origin: timedelta = timedelta(days=30)
    """First MessageIDs of routed events; at least the inbox's retention."""
    every_s: float = 300.0
    """Pause between sweeps."""
    batch: int = 2000
    """Rows one DELETE takes at most."""


@dataclass(frozen=True)
class _Sweep:
    table: str
    aged: str
    """Condition of a row past retention ($1 is the retention interval); aliased ``t``."""
    option: str


SWEEPS = (
    _Sweep("outbox", "t.status = 'delivered' AND t.delivered_at < now() - $1::interval", "outbox"),
    _Sweep("smev_queue", "t.acked_at IS NOT NULL AND t.acked_at < now() - $1::interval", "outbox"),
    _Sweep("inbox", "t.processed_at < now() - $1::interval", "inbox"),
    _Sweep("ingest_keys", """t.accepted_at < now() - $1::interval AND EXISTS (
               SELECT 1 FROM ingest_keys first WHERE first.source_system = t.source_system
                  AND first.source_record_id = t.source_record_id AND first.version < t.version)
             AND EXISTS (
               SELECT 1 FROM ingest_keys later WHERE later.source_system = t.source_system
                  AND later.source_record_id = t.source_record_id AND later.version > t.version)""",
           "ingest_keys"),
    _Sweep("ingest_keys", "t.accepted_at < now() - $1::interval", "ingest_records"),
    _Sweep("message_origin", "t.routed_at < now() - $1::interval", "message_origin"),
)


async def sweep(pool: asyncpg.Pool, options: RetentionOptions) -> dict[str, int]:
    """Delete every row past its retention, a batch per statement; rows deleted by table."""
    began, deleted = time.monotonic(), {}
    for item in SWEEPS:
        older_than = getattr(options, item.option)
        total = 0
        while True:
            status = await pool.execute(
                f"""DELETE FROM {item.table} WHERE ctid = ANY(ARRAY(
                       SELECT t.ctid FROM {item.table} t WHERE {item.aged} LIMIT $2 FOR UPDATE SKIP LOCKED))""",
                older_than, options.batch)
            count = rows_affected(status)
            total += count
            if count < options.batch:
                break
        deleted[item.table] = deleted.get(item.table, 0) + total
        metrics.RETENTION_DELETED.labels(item.table).inc(total)
    log.info("retention.swept", **deleted, seconds=round(time.monotonic() - began, 2))
    return deleted


async def run(pool: asyncpg.Pool, options: RetentionOptions, stop: asyncio.Event) -> None:
    """Sweep every ``options.every_s`` until ``stop``; an outage skips a sweep, the next one catches up."""
    while not stop.is_set():
        try:
            await sweep(pool, options)
        except Exception as error:
            if not is_outage(error) and not isinstance(error, asyncpg.QueryCanceledError):
                raise
            log.warning("retention.sweep_failed", error=repr(error), retry_in_s=options.every_s)
        await pause(stop, options.every_s)
