"""The relay's claim stays cheap whatever plan PostgreSQL had or has for it.

On a connection that first ran it while the outbox was nearly empty (a cached generic plan), and with
statistics taken while the outbox was empty or all delivered: "pending" then looks rare, and the claim
written as a NOT EXISTS anti-join was planned as a nested loop comparing every due row with every other
(49 million buffer reads, 19-30 s for 10,000 rows; a pipeline run fell to a tenth of its speed). That one
is measured in buffers read (EXPLAIN ANALYZE), not in seconds.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

import asyncpg
import pytest

from broker.delivery import outbox
from broker.infra.postgres import create_pool

BACKLOG = 15_000
LEASE = timedelta(seconds=30)


async def test_a_claim_first_run_on_an_empty_outbox_is_planned_afresh_once_a_backlog_builds(db_settings, db_pool):
    """asyncpg prepares the claim once per session; after five runs PostgreSQL may keep a generic plan made
    for the empty outbox, which took over a second of CPU per claim over 9,000 rows (the bench). The
    relay's sessions plan every run for the table as it is: no generic plan is ever used."""
    async with db_pool.acquire() as conn:
        await conn.execute("ALTER TABLE outbox SET (autovacuum_enabled = false)")  # no ANALYZE to rescue it
    relay_pool = await create_pool(db_settings, min_size=1, max_size=1)  # one session: the relay's
    try:
        for _ in range(8):  # past PostgreSQL's five custom plans: a generic one may now be kept
            assert await outbox.claim(relay_pool, "portal", keys=200, per_key=100, lease=LEASE) == []
        await db_pool.execute(
            """INSERT INTO outbox (message_id, destination, partition_key, payload, recipient, message_type)
               SELECT gen_random_uuid(), 'portal', 'key-' || n, '\\x00'::bytea, 'EPGU', 'GradePosted'
               FROM generate_series(1, $1) AS n""", BACKLOG)
        claimed = await outbox.claim(relay_pool, "portal", keys=200, per_key=100, lease=LEASE)
        plans = await relay_pool.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", outbox.CLAIM)
    finally:
        await relay_pool.close()
    assert len(claimed) == 200
    assert plans is not None and plans["custom_plans"] == 9 and plans["generic_plans"] == 0, dict(plans or {})


ROWS = 10_000
KEYS = 50
CLAIM_KEYS = 200
"""Keys a measured claim asks for."""


async def fill(pool: asyncpg.Pool, count: int) -> None:
    await pool.executemany(
        "INSERT INTO outbox (message_id, destination, partition_key, payload) VALUES ($1, 'portal', $2, $3)",
        [(uuid.uuid4(), f"sch-{n % KEYS:02d}", b"<envelope/>") for n in range(count)])


async def buffers_of_a_claim(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            plan = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + outbox.CLAIM,
                                       CLAIM_KEYS, 20, timedelta(seconds=30), uuid.uuid4(), "portal")
        finally:
            await transaction.rollback()  # EXPLAIN ANALYZE ran the claim: leave the rows unclaimed
    top = json.loads(plan)[0]["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"]


async def test_a_claim_over_a_backlog_reads_little_with_statistics_of_a_delivered_outbox(db_pool) -> None:  # noqa: ANN001
    await fill(db_pool, 5000)
    await db_pool.execute("UPDATE outbox SET status = 'delivered', delivered_at = now()")
    await db_pool.execute("ANALYZE outbox")  # pending rows now look rare
    await fill(db_pool, ROWS)

    # The anti-join plan read ~49 million buffers here; a probe per due row reads a few each.
    assert await buffers_of_a_claim(db_pool) < 20 * ROWS
    claimed = await outbox.claim(db_pool, "portal", keys=200, per_key=20, lease=timedelta(seconds=30))
    assert len(claimed) == KEYS * 20 and len({m.partition_key for m in claimed}) == KEYS
    # Each key's rows are its first 20, in order.
    for key in {m.partition_key for m in claimed}:
        ids = [m.id for m in claimed if m.partition_key == key]
        first = await db_pool.fetch("SELECT id FROM outbox WHERE partition_key = $1 AND status = 'pending' "
                                    "ORDER BY id LIMIT 20", key)
        assert ids == [row["id"] for row in first]



async def test_a_claim_over_a_backlog_is_never_compiled(db_settings, db_pool) -> None:  # noqa: ANN001
    """A backlog makes the claim's estimate exceed jit_above_cost: with JIT on, PostgreSQL compiled it
    on every run (~11 ms of CPU for a 3 ms claim). ejx's sessions never JIT, whatever the cost."""
    await fill(db_pool, ROWS)
    await db_pool.execute("ANALYZE outbox")
    relay_pool = await create_pool(db_settings, min_size=1, max_size=1)
    try:
        assert "JIT" not in await _plan_of_a_claim(relay_pool)
        assert "JIT" not in await _plan_of_a_claim(relay_pool, "SET LOCAL jit_above_cost = 0")
        # The control: the same claim where JIT is allowed is compiled, so the checks above can fail.
        assert "JIT" in await _plan_of_a_claim(relay_pool, "SET LOCAL jit = on; SET LOCAL jit_above_cost = 0")
    finally:
        await relay_pool.close()


async def _plan_of_a_claim(pool: asyncpg.Pool, setup: str | None = None) -> dict:
    """EXPLAIN ANALYZE of one claim after ``setup`` in its transaction, rolled back: nothing stays claimed."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            if setup:
                await conn.execute(setup)
            plan = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + outbox.CLAIM,
                                       200, 20, timedelta(seconds=30), uuid.uuid4(), "portal")
        finally:
            await transaction.rollback()
    return json.loads(plan)[0]


async def fill_one_row_per_key(pool: asyncpg.Pool, count: int, *, run: str = "a") -> None:
    """A backlog as the router writes it: a grade's key has one row, so every due row is its key's head."""
    payload = os.urandom(1900)  # an envelope's size: stored out of line, as the router's are
    for start in range(0, count, 200):
        await pool.executemany(
            "INSERT INTO outbox (message_id, destination, partition_key, payload) VALUES ($1, 'portal', $2, $3)",
            [(uuid.uuid4(), f"bench/{run}-grade-{n}", payload) for n in range(start, min(count, start + 200))])


BUFFERS_PER_CLAIMED_ROW = 40
"""A claim reads a few index and heap pages per row it leases (about 5,300 buffers for 200), however long
the backlog behind them."""


async def test_a_claim_over_a_never_analysed_backlog_reads_per_row_claimed(db_pool) -> None:  # noqa: ANN001
    """A fresh deployment's first minute (and every bench): no statistics yet. Written as min(), the head
    test walked the destination's whole due range for each head: 335 ms per claim over 10,000 rows."""
    await db_pool.execute("ALTER TABLE outbox SET (autovacuum_enabled = false)")  # no ANALYZE to rescue it
    await fill_one_row_per_key(db_pool, ROWS)
    assert await db_pool.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = 'outbox'") == 0

    assert await buffers_of_a_claim(db_pool) < BUFFERS_PER_CLAIMED_ROW * CLAIM_KEYS


async def test_a_claim_over_an_analysed_backlog_stops_at_its_limit(db_pool) -> None:  # noqa: ANN001
    """With statistics of the backlog itself, "id = the head" looked like one row in 200: PostgreSQL read
    every due row, sorted them all and kept the first 200 (28 ms per claim over 7,000 due rows)."""
    await fill_one_row_per_key(db_pool, ROWS)
    await db_pool.execute("ANALYZE outbox")

    assert await buffers_of_a_claim(db_pool) < BUFFERS_PER_CLAIMED_ROW * CLAIM_KEYS
    # The first 200 due rows, in the order they were written.
    first = await db_pool.fetch("SELECT id FROM outbox ORDER BY next_attempt_at, id LIMIT $1", CLAIM_KEYS)
    claimed = await outbox.claim(db_pool, "portal", keys=CLAIM_KEYS, per_key=20, lease=timedelta(seconds=30))
    assert sorted(m.id for m in claimed) == sorted(row["id"] for row in first)


async def backlog_after_statistics_of_nothing_pending(pool: asyncpg.Pool) -> None:
    """Yesterday's rows all delivered and analysed (a healthy outbox's usual state: both partial indexes of
    pending rows now look empty), then today's backlog, with no ANALYZE to rescue the plans."""
    await pool.execute("ALTER TABLE outbox SET (autovacuum_enabled = false)")
    await fill_one_row_per_key(pool, 5000, run="yesterday")
    await pool.execute("UPDATE outbox SET status = 'delivered', delivered_at = now()")
    await pool.execute("ANALYZE outbox")
    await fill_one_row_per_key(pool, ROWS)


async def test_a_claim_after_statistics_of_nothing_pending_reads_per_row_claimed(db_pool) -> None:  # noqa: ANN001
    """With both partial indexes believed empty PostgreSQL took either for any lookup: the per-key probes
    walked the due index's whole range for the destination, 24 million buffers (17-22 s) per claim over
    10,000 pending rows. Each lookup now has one index it may use (migration 0015)."""
    await backlog_after_statistics_of_nothing_pending(db_pool)

    assert await buffers_of_a_claim(db_pool) < BUFFERS_PER_CLAIMED_ROW * CLAIM_KEYS


async def test_marking_rows_delivered_goes_through_the_primary_key(db_pool) -> None:  # noqa: ANN001
    """With the same statistics, marking 200 rows delivered scanned the whole due index, more of it the
    longer the backlog."""
    await backlog_after_statistics_of_nothing_pending(db_pool)
    ids = [row["id"] for row in await db_pool.fetch(
        "SELECT id FROM outbox WHERE status = 'pending' ORDER BY id DESC LIMIT $1", CLAIM_KEYS)]

    async with db_pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            plan = json.loads(await conn.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + outbox.MARK_DELIVERED, ids))[0]["Plan"]
            delivered = await conn.fetchval("SELECT count(*) FROM outbox WHERE id = ANY($1::bigint[]) "
                                            "AND status = 'delivered'", ids)
        finally:
            await transaction.rollback()
    assert delivered == CLAIM_KEYS
    assert _index_names(plan) == {"outbox_pkey"}, plan


def _index_names(plan: dict) -> set[str]:
    return {plan["Index Name"]} if "Index Name" in plan else set().union(
        *(_index_names(child) for child in plan.get("Plans", [])))


@pytest.mark.parametrize("analysed", ["with the dead rows", "before any row was dead"])
async def test_keys_behind_a_dead_row_are_skipped_cheaply_with_many_dead_rows(db_pool, analysed):  # noqa: ANN001
    """Each candidate head probes the dead rows' own index once: a long outage's thousands of dead rows
    neither slow the claim nor let a later row of a dead key through, whatever the statistics say."""
    dead = [(uuid.uuid4(), f"gone-{n}" if n % 10 else f"sch-{n % KEYS:02d}", b"<envelope/>") for n in range(3000)]
    await db_pool.execute("ALTER TABLE outbox SET (autovacuum_enabled = false)")  # only the ANALYZE below
    await db_pool.executemany(  # earlier than the pending rows, as a key's dead row always is
        "INSERT INTO outbox (message_id, destination, partition_key, payload, status) "
        "VALUES ($1, 'portal', $2, $3, $4)",
        [(*row, "dead" if analysed == "with the dead rows" else "delivered") for row in dead])
    await fill(db_pool, ROWS)
    await db_pool.execute("ANALYZE outbox")
    await db_pool.execute("UPDATE outbox SET status = 'dead' WHERE status = 'delivered'")  # they die after it

    assert await buffers_of_a_claim(db_pool) < 20 * ROWS
    claimed = await outbox.claim(db_pool, "portal", keys=200, per_key=20, lease=timedelta(seconds=30))
    held = {row["partition_key"] for row in await db_pool.fetch(
        "SELECT DISTINCT partition_key FROM outbox WHERE status = 'dead' AND partition_key LIKE 'sch-%'")}
    assert held and len(held) < KEYS
    assert {m.partition_key for m in claimed} == {f"sch-{n:02d}" for n in range(KEYS)} - held
