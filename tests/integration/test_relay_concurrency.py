"""Two relays at once on the same 10,000 rows: every row reaches the portal exactly once, in key order.

The receiver here only counts MessageIDs (from the X-Ejx-Message-Id header) in
memory: this test is about claims, not signatures, which test_relay_portal covers.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from broker import outbox
from broker.backoff import Backoff
from broker.db import UnitOfWork
from broker.delivery import MESSAGE_ID_HEADER, PortalDestination
from broker.envelope import new_message_id
from broker.relay import Relay, RelayOptions
from tests.delivery_support import eventually, serving

ROWS = int(os.environ.get("EJX_TEST_ROWS", 10_000))
KEYS = 500


def counting_portal() -> tuple[FastAPI, Counter, list[uuid.UUID]]:
    app = FastAPI()
    copies: Counter = Counter()
    arrival: list[uuid.UUID] = []

    @app.post("/envelopes")
    async def receive(request: Request) -> JSONResponse:
        await request.body()
        message_id = uuid.UUID(request.headers[MESSAGE_ID_HEADER])
        copies[message_id] += 1
        arrival.append(message_id)
        return JSONResponse({"status": "received"})

    return app, copies, arrival


async def test_two_relays_deliver_each_of_10000_rows_once(db_pool):
    messages = [outbox.NewMessage(message_id=new_message_id(), destination="portal", partition_key=f"sch-{i % KEYS}",
                                  payload=b"<Envelope/>", recipient="EPGU", content_type="GradePosted")
                for i in range(ROWS)]
    async with UnitOfWork(db_pool) as uow:
        assert await outbox.enqueue(uow.connection, messages) == ROWS
        await uow.commit()

    app, copies, arrival = counting_portal()
    options = RelayOptions(batch_size=100, concurrency=16, idle_poll_s=0.01, backoff=Backoff(0.01, 0.05))
    async with serving(app) as base:
        destinations = [PortalDestination(f"{base}/envelopes") for _ in range(2)]
        stop = asyncio.Event()
        relays = [asyncio.create_task(Relay(db_pool, {"portal": d}, options=options).run(stop))
                  for d in destinations]
        try:
            async def all_delivered():
                return await db_pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'delivered'") == ROWS
            await eventually(all_delivered, timeout=900, every=0.5)
        finally:
            stop.set()
            await asyncio.gather(*relays)
            for d in destinations:
                await d.close()

    assert set(copies) == {m.message_id for m in messages}
    assert set(copies.values()) == {1}, "some message reached the portal twice"
    assert await db_pool.fetchval("SELECT max(attempts) FROM outbox") == 1
    position = {message_id: i for i, message_id in enumerate(arrival)}
    for key in range(KEYS):
        sent = [position[m.message_id] for m in messages[key::KEYS]]
        assert sent == sorted(sent), f"key sch-{key} arrived out of order"
