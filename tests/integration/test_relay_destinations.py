"""Each destination has its own claims and budget: one whose receiver hangs does not hold back another."""

from __future__ import annotations

import asyncio

from broker.delivery import outbox
from broker.delivery.relay import Relay, RelayOptions
from broker.infra.backoff import Backoff
from broker.infra.postgres import UnitOfWork
from broker.xml.envelope import new_message_id
from tests.delivery_support import eventually


async def _soon(holds, *, timeout: float) -> None:
    async def check() -> bool:
        return holds()
    await eventually(check, timeout=timeout)


class Hanging:
    """A destination whose receiver takes every message and answers only once released."""

    max_batch = 1

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = asyncio.Event()
        self.started = 0

    async def deliver(self, message: outbox.OutboxMessage) -> None:
        self.started += 1
        await self.release.wait()

    async def close(self) -> None: ...


class Recording:
    max_batch = 1

    def __init__(self, name: str) -> None:
        self.name = name
        self.delivered: list = []

    async def deliver(self, message: outbox.OutboxMessage) -> None:
        self.delivered.append(message.message_id)

    async def close(self) -> None: ...


async def _enqueue(pool, destination: str, keys: list[str]) -> list:
    messages = [outbox.NewMessage(message_id=new_message_id(), destination=destination, partition_key=key,
                                  payload=b"<Envelope/>", recipient="R", message_type="GradePosted") for key in keys]
    async with UnitOfWork(pool) as uow:
        await outbox.enqueue(uow.connection, messages)
        await uow.commit()
    return [m.message_id for m in messages]


async def test_a_destination_that_hangs_does_not_hold_back_the_others(db_pool) -> None:
    portal, agency = Hanging("portal"), Recording("interagency")
    relay = Relay(db_pool, {"portal": portal, "interagency": agency},
                  options=RelayOptions(batch_size=4, idle_poll_s=0.05, backoff=Backoff(0.05, 0.1)))
    await _enqueue(db_pool, "portal", [f"p{n}" for n in range(4)])
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await _soon(lambda: portal.started == 4, timeout=10)  # the portal's whole budget hangs
        sent = await _enqueue(db_pool, "interagency", ["a1", "a2"])
        await _soon(lambda: sorted(agency.delivered) == sorted(sent), timeout=5)
        assert portal.started == 4 and not portal.release.is_set()
        assert await db_pool.fetchval(
            "SELECT count(*) FROM outbox WHERE destination = 'portal' AND status = 'pending'") == 4
    finally:
        portal.release.set()
        stop.set()
        await asyncio.wait_for(running, 30)
    assert await db_pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'delivered'") == 6


async def test_a_relay_leaves_the_rows_of_destinations_it_does_not_have_to_the_relays_that_do(db_pool) -> None:
    ours = Recording("portal")
    relay = Relay(db_pool, {"portal": ours}, options=RelayOptions(idle_poll_s=0.05))
    mine = await _enqueue(db_pool, "portal", ["k1"])
    await _enqueue(db_pool, "interagency", ["k2"])
    assert await relay.drain() == 1
    assert ours.delivered == mine
    left = await db_pool.fetchrow("SELECT status, attempts FROM outbox WHERE destination = 'interagency'")
    assert (left["status"], left["attempts"]) == ("pending", 0)  # never claimed, never counted as a failure
