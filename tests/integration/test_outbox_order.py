"""Outbox order per key without the xmin horizon: writers of one key serialise, others never wait.

The relay used to claim only rows below the cluster-wide xmin horizon, so one long
transaction anywhere in the database held back every delivery. Now a key's
writers take its bucket's advisory lock, so id order is commit order per key.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from broker.delivery import outbox
from broker.infra.postgres import UnitOfWork
from broker.xml.envelope import new_message_id

LEASE = timedelta(seconds=30)


def _message(key: str) -> outbox.NewMessage:
    return outbox.NewMessage(message_id=new_message_id(), destination="portal", partition_key=key,
                             payload=b"<Envelope/>", recipient="EPGU", message_type="GradePosted")


def _other_bucket(key: str) -> str:
    """A key that hashes into another lock bucket than ``key``."""
    return next(f"other-{n}" for n in range(1000)
                if outbox.key_bucket("portal", f"other-{n}") != outbox.key_bucket("portal", key))


async def _enqueue(pool, *messages: outbox.NewMessage) -> None:
    async with UnitOfWork(pool) as uow:
        await outbox.enqueue(uow.connection, messages)
        await uow.commit()


async def test_a_long_transaction_elsewhere_does_not_delay_new_rows(db_pool) -> None:
    idle = await db_pool.acquire()
    transaction = idle.transaction()
    await transaction.start()
    await idle.fetchval("SELECT pg_current_xact_id()")  # holds the xmin horizon back, like a long report
    try:
        message = _message("grade-1")
        await _enqueue(db_pool, message)
        claimed = await outbox.claim(db_pool, "portal", keys=10, lease=LEASE)
        assert [m.message_id for m in claimed] == [message.message_id]
    finally:
        await transaction.rollback()
        await db_pool.release(idle)


async def test_writers_of_one_key_commit_in_id_order_and_other_keys_do_not_wait(db_pool) -> None:
    first, second, elsewhere = _message("grade-7"), _message("grade-7"), _message(_other_bucket("grade-7"))
    async with UnitOfWork(db_pool) as uow:
        await outbox.enqueue(uow.connection, [first])
        same_key = asyncio.create_task(_enqueue(db_pool, second))
        await _enqueue(db_pool, elsewhere)  # another bucket: not blocked by the open transaction
        await asyncio.sleep(0.5)
        assert not same_key.done(), "a second writer of the same key must wait for the first to commit"
        await uow.commit()
    await asyncio.wait_for(same_key, timeout=10)

    claimed = await outbox.claim(db_pool, "portal", keys=10, per_key=5, lease=LEASE)
    by_key = {}
    for message in claimed:
        by_key.setdefault(message.partition_key, []).append(message.message_id)
    assert by_key["grade-7"] == [first.message_id, second.message_id]
    assert by_key[elsewhere.partition_key] == [elsewhere.message_id]
