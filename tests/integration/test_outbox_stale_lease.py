"""A relay whose lease ran out records nothing: the row is another lease's now, whatever the first one saw.

A delivery can outlast its lease (a dead socket, a pause, an outage that skipped the
renewals); the row is then claimed again, by another relay or by this one, under a
new lease. The first holder's outcome arrives late and must leave the row exactly as
the new holder has it: not rescheduled, not dead, no attempt given back, its error
not overwritten. Each test claims a row, lets its lease run out, claims it again and
records the first claim's outcome.
"""

from __future__ import annotations

from datetime import timedelta

from broker.delivery import outbox
from broker.infra.postgres import UnitOfWork
from broker.xml.envelope import new_message_id

LEASE = timedelta(seconds=30)


async def _taken_over(pool) -> tuple[outbox.OutboxMessage, outbox.OutboxMessage]:
    """One row claimed, its lease run out, claimed again: (the first claim's message, the second's)."""
    async with UnitOfWork(pool) as uow:
        await outbox.enqueue(uow.connection, [outbox.NewMessage(
            message_id=new_message_id(), destination="portal", partition_key="grade-1", payload=b"<Envelope/>",
            recipient="EPGU", message_type="GradePosted")])
        await uow.commit()
    [first] = await outbox.claim(pool, "portal", keys=1, lease=LEASE)
    await pool.execute("UPDATE outbox SET next_attempt_at = now() - interval '1 second' WHERE id = $1", first.id)
    [second] = await outbox.claim(pool, "portal", keys=1, lease=LEASE)
    assert (second.id, second.attempts) == (first.id, 2) and second.lease_id != first.lease_id
    return first, second


async def _row(pool, message: outbox.OutboxMessage):
    return await pool.fetchrow(
        "SELECT status, attempts, next_attempt_at, last_error, lease_id FROM outbox WHERE id = $1", message.id)


async def test_a_retry_recorded_under_a_lost_lease_leaves_the_new_holders_row_alone(db_pool) -> None:
    first, second = await _taken_over(db_pool)
    held = await _row(db_pool, second)
    assert (held["status"], held["lease_id"]) == ("pending", second.lease_id)

    recorded = await outbox.mark_retry(db_pool, first, delay=timedelta(seconds=1), error="HTTP 500 (too late)")

    assert await _row(db_pool, second) == held, "a stale lease rescheduled the row another lease is delivering"
    assert recorded is False


async def test_a_dead_row_recorded_under_a_lost_lease_leaves_the_new_holders_row_alone(db_pool) -> None:
    first, second = await _taken_over(db_pool)
    held = await _row(db_pool, second)

    recorded = await outbox.mark_dead(db_pool, first, error="SignatureVerificationFault (too late)")

    assert await _row(db_pool, second) == held, "a stale lease killed the row another lease is delivering"
    assert recorded is False


async def test_a_release_under_a_lost_lease_leaves_the_new_holders_row_alone(db_pool) -> None:
    """Released, the row would be due at once with its attempt given back: a third claim would send it while
    the second lease still delivers it."""
    first, second = await _taken_over(db_pool)
    held = await _row(db_pool, second)

    await outbox.release(db_pool, [first])

    assert await _row(db_pool, second) == held, "a stale lease gave back the row another lease is delivering"
    assert await outbox.claim(db_pool, "portal", keys=1, lease=LEASE) == []


async def test_a_lost_lease_is_not_renewed_and_no_longer_holds_the_row(db_pool) -> None:
    """Renewed, the first relay would go on sending the key's rows beside the second one."""
    first, second = await _taken_over(db_pool)
    held = await _row(db_pool, second)

    still_held = await outbox.renew(db_pool, [first], lease=LEASE)

    assert await _row(db_pool, second) == held, "a stale lease extended the row another lease is delivering"
    assert still_held == set()
