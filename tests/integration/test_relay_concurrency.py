"""Two relays at once on the same 10,000 rows: every row reaches the portal exactly once, in key order.

The receiver here only counts MessageIDs (from the X-Ejx-Message-Id header) in
memory: this test is about claims, not signatures, which test_relay_portal covers.
"""

from __future__ import annotations

import os

from broker.delivery import outbox
from broker.delivery.relay import RelayOptions
from broker.infra.backoff import Backoff
from broker.infra.postgres import UnitOfWork
from broker.xml.envelope import new_message_id
from tests.delivery_support import counting_portal, serving, two_relays_deliver

ROWS = int(os.environ.get("EJX_TEST_ROWS", 10_000))
KEYS = 500


async def test_two_relays_deliver_each_of_10000_rows_once(db_pool):
    messages = [outbox.NewMessage(message_id=new_message_id(), destination="portal", partition_key=f"sch-{i % KEYS}",
                                  payload=b"<Envelope/>", recipient="EPGU", message_type="GradePosted")
                for i in range(ROWS)]
    async with UnitOfWork(db_pool) as uow:
        assert await outbox.enqueue(uow.connection, messages) == ROWS
        await uow.commit()

    app, copies, arrival = counting_portal()
    options = RelayOptions(batch_size=100, concurrency=16, idle_poll_s=0.01, backoff=Backoff(0.01, 0.05))
    async with serving(app) as base:
        await two_relays_deliver(db_pool, f"{base}/envelopes", options=options, rows=ROWS, timeout=900)

    assert set(copies) == {m.message_id for m in messages}
    assert set(copies.values()) == {1}, "some message reached the portal twice"
    assert await db_pool.fetchval("SELECT max(attempts) FROM outbox") == 1
    position = {message_id: i for i, message_id in enumerate(arrival)}
    for key in range(KEYS):
        sent = [position[m.message_id] for m in messages[key::KEYS]]
        assert sent == sorted(sent), f"key sch-{key} arrived out of order"
