"""A chain that outlives its lease keeps it: no second relay delivers the same rows meanwhile."""

from __future__ import annotations

import asyncio
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

ROWS = 8
LEASE_S = 2.0
SLOW_S = 0.5
"""Each delivery takes this long, so one key's chain of ROWS needs about twice the lease."""


async def test_a_chain_longer_than_its_lease_is_delivered_once_by_one_relay(db_pool) -> None:
    messages = [outbox.NewMessage(message_id=new_message_id(), destination="portal", partition_key="one-record",
                                  payload=b"<Envelope/>", recipient="EPGU", content_type="GradePosted")
                for _ in range(ROWS)]
    async with UnitOfWork(db_pool) as uow:
        await outbox.enqueue(uow.connection, messages)
        await uow.commit()

    copies: Counter = Counter()
    app = FastAPI()

    @app.post("/envelopes")
    async def receive(request: Request) -> JSONResponse:
        await request.body()
        copies[uuid.UUID(request.headers[MESSAGE_ID_HEADER])] += 1
        await asyncio.sleep(SLOW_S)
        return JSONResponse({"status": "received"})

    options = RelayOptions(batch_size=10, per_key=ROWS, lease_s=LEASE_S, idle_poll_s=0.05,
                           backoff=Backoff(0.05, 0.1))
    async with serving(app) as base:
        destinations = [PortalDestination(f"{base}/envelopes") for _ in range(2)]
        stop = asyncio.Event()
        relays = [asyncio.create_task(Relay(db_pool, {"portal": d}, options=options).run(stop))
                  for d in destinations]
        try:
            async def all_delivered() -> bool:
                return await db_pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'delivered'") == ROWS
            await eventually(all_delivered, timeout=120, every=0.2)
        finally:
            stop.set()
            await asyncio.gather(*relays)
            for destination in destinations:
                await destination.close()

    assert set(copies) == {m.message_id for m in messages}
    assert set(copies.values()) == {1}, "a row was delivered again after its lease ran out"
    assert await db_pool.fetchval("SELECT max(attempts) FROM outbox") == 1
