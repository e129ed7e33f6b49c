"""Two analytics transactions over the same projection rows wait for each other; they never deadlock.

Several analytics processes share one consumer group; after a rebalance the old
and the new owner of a partition may apply overlapping records at once. The
projections lock their rows in one order whatever the batch (schools sorted,
diary tables in a fixed order, records sorted within each), so the second waits
for the first.

Each test makes the interleaving that deadlocks rows locked in batch order: a
third transaction holds one row; batch 1 (rows A, B in its order) queues for it;
batch 2 (the other order) takes the other row and queues behind. When the third
lets go, batch-order locking has each batch holding the row the other waits for,
and PostgreSQL aborts one with DeadlockDetectedError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from broker.analytics.projections import diary, school_activity
from broker.domain.model import AttendanceStatus, Event
from tests.fixtures.analytics.journal import ANNA, BORIS, attendance, corrected, posted, register

Apply = Callable[[asyncpg.Connection, Sequence[Event]], Awaitable[None]]


async def until_waiting_on_a_lock(pool: asyncpg.Pool, pid: int) -> None:
    async with asyncio.timeout(10):
        while await pool.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid) != "Lock":
            await asyncio.sleep(0.01)


async def in_transaction(pool: asyncpg.Pool, apply: Apply, events: Sequence[Event],
                         started: asyncio.Future) -> None:
    async with pool.acquire() as conn, conn.transaction():
        started.set_result(conn.get_server_pid())
        await apply(conn, events)


async def crossed(pool: asyncpg.Pool, apply: Apply, held: str, first: Sequence[Event],
                  second: Sequence[Event]) -> None:
    """Apply ``first`` and ``second`` concurrently while ``held`` (a statement locking a row) delays them."""
    async with pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(held)
        loop = asyncio.get_running_loop()
        tasks = []
        for events in (first, second):
            started = loop.create_future()
            tasks.append(asyncio.create_task(in_transaction(pool, apply, events, started)))
            await until_waiting_on_a_lock(pool, await started)
        await transaction.commit()
    async with asyncio.timeout(20):
        await asyncio.gather(*tasks)


async def test_two_batches_counting_the_same_schools_in_opposite_orders_do_not_deadlock(db_pool) -> None:  # noqa: ANN001
    await register(db_pool)
    one = [posted(f"a{n}", 1, f"2026-03-0{n}T09:00:00", student=ANNA, subject="MATH", lesson="2026-03-02", mark="5",
                  school="sch-001") for n in (2, 3, 4)]
    two = [posted(f"b{n}", 1, f"2026-03-0{n}T09:00:00", student="st-vera3", subject="MATH", lesson="2026-03-02",
                  mark="4", school="sch-002", class_unit="7Б") for n in (2, 3, 4)]
    await school_activity.record_events(db_pool, [one[0], two[0]])  # both rows exist, so both batches update

    await crossed(db_pool, school_activity.record_events,
                  "SELECT 1 FROM school_activity WHERE school_id = 'sch-002' FOR UPDATE",
                  [two[1], one[1]], [one[2], two[2]])

    counts = dict(await db_pool.fetch("SELECT school_id, events FROM school_activity ORDER BY 1"))
    assert counts == {"sch-001": 3, "sch-002": 3}


async def test_two_batches_changing_the_same_diary_rows_in_opposite_orders_do_not_deadlock(db_pool) -> None:  # noqa: ANN001
    await register(db_pool)
    grade = posted("g1", 1, "2026-03-02T09:00:00", student=BORIS, subject="MATH", lesson="2026-03-02", mark="3")
    other = posted("g2", 1, "2026-03-02T09:05:00", student=BORIS, subject="MATH", lesson="2026-03-02", mark="3")
    absent = attendance("at1", 1, "2026-03-02T09:10:00", student=BORIS, day="2026-03-02",
                        status=AttendanceStatus.ABSENT)
    late = attendance("at1", 2, "2026-03-02T09:20:00", student=BORIS, day="2026-03-02",
                      status=AttendanceStatus.LATE, minutes_late=5)
    await diary.apply_events(db_pool, [grade, other, absent])

    # Records in opposite orders within one table...
    await crossed(db_pool, diary.apply_events,
                  "SELECT 1 FROM diary_grades WHERE grade_record_id = 'g2' FOR UPDATE",
                  [corrected("g2", 2, "2026-03-02T10:00:00", "4"), corrected("g1", 2, "2026-03-02T10:00:00", "4")],
                  [corrected("g1", 3, "2026-03-02T11:00:00", "5"), corrected("g2", 3, "2026-03-02T11:00:00", "5")])
    # ... and tables in opposite orders.
    await crossed(db_pool, diary.apply_events,
                  "SELECT 1 FROM diary_grades WHERE grade_record_id = 'g1' FOR UPDATE",
                  [corrected("g1", 4, "2026-03-02T12:00:00", "2"), late],
                  [absent, corrected("g1", 5, "2026-03-02T13:00:00", "4")])

    marks = dict(await db_pool.fetch("SELECT grade_record_id, mark_value FROM diary_grades ORDER BY 1"))
    assert marks == {"g1": "4", "g2": "5"}
    assert await db_pool.fetchval("SELECT status FROM diary_attendance WHERE source_record_id = 'at1'") == "late"
