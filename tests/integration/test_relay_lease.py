"""A chain that outlives its lease keeps it: no second relay delivers the same rows meanwhile."""

from __future__ import annotations

from broker.delivery import outbox
from broker.delivery.relay import RelayOptions
from broker.infra.backoff import Backoff
from broker.infra.postgres import UnitOfWork
from broker.xml.envelope import new_message_id
from tests.delivery_support import counting_portal, serving, two_relays_deliver

ROWS = 8
LEASE_S = 2.0
SLOW_S = 0.5
"""Each delivery takes this long, so one key's chain of ROWS needs about twice the lease."""


async def test_a_chain_longer_than_its_lease_is_delivered_once_by_one_relay(db_pool) -> None:
    messages = [outbox.NewMessage(message_id=new_message_id(), destination="portal", partition_key="one-record",
                                  payload=b"<Envelope/>", recipient="EPGU", message_type="GradePosted")
                for _ in range(ROWS)]
    async with UnitOfWork(db_pool) as uow:
        await outbox.enqueue(uow.connection, messages)
        await uow.commit()

    app, copies, _ = counting_portal(delay_s=SLOW_S)
    options = RelayOptions(batch_size=10, per_key=ROWS, lease_s=LEASE_S, idle_poll_s=0.05,
                           backoff=Backoff(0.05, 0.1))
    async with serving(app) as base:
        await two_relays_deliver(db_pool, f"{base}/envelopes", options=options, rows=ROWS, timeout=120)

    assert set(copies) == {m.message_id for m in messages}
    assert set(copies.values()) == {1}, "a row was delivered again after its lease ran out"
    assert await db_pool.fetchval("SELECT max(attempts) FROM outbox") == 1
