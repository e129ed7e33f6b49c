"""Relay → reference portal over real HTTP: outages, dead rows, redrive, duplicates, order."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from broker.delivery import outbox
from broker.delivery.destinations import PortalDestination
from broker.delivery.relay import Relay, RelayOptions
from broker.devtools.receivers import ReceiverLog, portal_receiver_app
from broker.infra.backoff import Backoff
from broker.infra.postgres import UnitOfWork
from tests.delivery_support import (
    Outage,
    eventually,
    serving,
    signed_message,
    signing_pair,
)

FAST = RelayOptions(backoff=Backoff(base_s=0.01, cap_s=0.05), idle_poll_s=0.01, max_attempts=50)


@pytest.fixture(scope="module")
def pair():
    return signing_pair()


async def _enqueue(pool, *messages):
    async with UnitOfWork(pool) as uow:
        await outbox.enqueue(uow.connection, messages)
        await uow.commit()


async def _status(pool, message):
    return await pool.fetchrow("SELECT status, attempts, last_error FROM outbox WHERE message_id = $1",
                               message.message_id)


@pytest.fixture
async def portal(db_pool, pair):
    """The reference portal behind a switchable outage; yields (outage, receipts, url)."""
    receipts = ReceiverLog(db_pool, "portal")
    outage = Outage(portal_receiver_app(verifier=pair[1], receipts=receipts))
    async with serving(outage) as base:
        yield outage, receipts, f"{base}/envelopes"


async def _running(relay: Relay):
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    return stop, task


async def test_outage_then_recovery_delivers_exactly_once(db_pool, pair, portal):
    outage, receipts, url = portal
    outage.failures = 4
    message = signed_message(pair[0])
    await _enqueue(db_pool, message)
    destination = PortalDestination(url)
    stop, task = await _running(Relay(db_pool, {"portal": destination}, options=FAST))
    try:
        row = await eventually(lambda: _delivered(db_pool, message))
    finally:
        stop.set()
        await task
        await destination.close()
    assert outage.refused == 4
    assert row["attempts"] == 5
    assert await receipts.message_ids() == {message.message_id: 1}


async def _delivered(pool, message):
    row = await _status(pool, message)
    return row if row["status"] == "delivered" else None


async def test_permanent_failure_is_dead_and_redrive_delivers_once(db_pool, pair, portal):
    outage, receipts, url = portal
    outage.down = True
    message = signed_message(pair[0])
    await _enqueue(db_pool, message)
    destination = PortalDestination(url)
    relay = Relay(db_pool, {"portal": destination}, options=dataclasses.replace(FAST, max_attempts=3))
    stop, task = await _running(relay)
    try:
        async def dead():
            row = await _status(db_pool, message)
            return row if row["status"] == "dead" else None
        row = await eventually(dead)
        assert row["attempts"] == 3 and "HTTP 500" in row["last_error"]
        assert await receipts.message_ids() == {}

        outage.down = False
        assert await outbox.redrive(db_pool, destination="portal") == 1
        await eventually(lambda: _delivered(db_pool, message))
    finally:
        stop.set()
        await task
        await destination.close()
    assert await receipts.message_ids() == {message.message_id: 1}
    assert await outbox.redrive(db_pool) == 0


async def test_bad_signature_is_dead_at_once(db_pool, pair, portal):
    _, receipts, url = portal
    good = signed_message(pair[0])
    forged = dataclasses.replace(good, payload=good.payload.replace(b"<FivePoint>5<", b"<FivePoint>2<"))
    await _enqueue(db_pool, forged)
    destination = PortalDestination(url)
    try:
        await Relay(db_pool, {"portal": destination}, options=FAST).drain()
    finally:
        await destination.close()
    row = await _status(db_pool, forged)
    assert (row["status"], row["attempts"]) == ("dead", 1)
    assert "SignatureVerificationFault" in row["last_error"]
    report = await receipts.report()
    assert (report.received, report.bad_signatures) == (0, 1)


async def test_message_already_at_the_portal_counts_as_delivered(db_pool, pair, portal):
    _, receipts, url = portal
    message = signed_message(pair[0])
    destination = PortalDestination(url)
    try:
        async with httpx.AsyncClient() as portal_client:
            first = await portal_client.post(url, content=message.payload)
        assert first.status_code == 200
        await _enqueue(db_pool, message)
        assert await Relay(db_pool, {"portal": destination}, options=FAST).drain() == 1
    finally:
        await destination.close()
    assert (await _status(db_pool, message))["status"] == "delivered"
    report = await receipts.report()
    assert (report.received, report.duplicates) == (1, 1)


async def test_a_key_is_delivered_in_order_even_when_its_first_message_needs_retries(db_pool, pair, portal):
    outage, receipts, url = portal
    first = signed_message(pair[0], partition_key="sch-7")
    second = signed_message(pair[0], partition_key="sch-7")
    outage.only, outage.failures = str(first.message_id), 3
    await _enqueue(db_pool, first)
    await _enqueue(db_pool, second)
    destination = PortalDestination(url)
    stop, task = await _running(Relay(db_pool, {"portal": destination}, options=FAST))
    try:
        await eventually(lambda: _delivered(db_pool, second))
    finally:
        stop.set()
        await task
        await destination.close()
    order = await db_pool.fetch("SELECT message_id FROM receiver_messages ORDER BY first_received_at")
    assert [r["message_id"] for r in order] == [first.message_id, second.message_id]


async def test_a_row_committed_late_is_not_overtaken_by_a_later_row_of_its_key(db_pool, pair, portal):
    _, receipts, url = portal
    first = signed_message(pair[0], partition_key="sch-9")
    second = signed_message(pair[0], partition_key="sch-9")
    destination = PortalDestination(url)
    relay = Relay(db_pool, {"portal": destination}, options=FAST)
    try:
        async with UnitOfWork(db_pool) as slow:
            await outbox.enqueue(slow.connection, [first])      # smaller id, still uncommitted
            later = asyncio.create_task(_enqueue(db_pool, second))  # same key: waits for the first to commit
            await asyncio.sleep(0.3)
            assert not later.done()
            assert (await relay.run_once()).claimed == 0
            await slow.commit()
        await asyncio.wait_for(later, timeout=10)
        assert await relay.drain() == 2
    finally:
        await destination.close()
    order = await db_pool.fetch("SELECT message_id FROM receiver_messages ORDER BY first_received_at")
    assert [r["message_id"] for r in order] == [first.message_id, second.message_id]


async def test_a_dead_row_holds_back_its_key_until_redriven_then_the_key_goes_in_order(db_pool, pair, portal):
    """A correction must never reach the portal before the grade it corrects, dead or not."""
    outage, receipts, url = portal
    grade = signed_message(pair[0], partition_key="sch-11")
    correction = signed_message(pair[0], partition_key="sch-11")
    other = signed_message(pair[0], partition_key="sch-12")
    outage.only, outage.failures = str(grade.message_id), 2
    await _enqueue(db_pool, grade, correction, other)
    destination = PortalDestination(url)
    stop, task = await _running(Relay(db_pool, {"portal": destination},
                                      options=dataclasses.replace(FAST, max_attempts=2)))
    try:
        async def dead():
            return (await _status(db_pool, grade))["status"] == "dead" or None
        await eventually(dead)
        await eventually(lambda: _delivered(db_pool, other))  # other keys do not wait
        await asyncio.sleep(0.5)  # many claim rounds of the running relay
        assert (await _status(db_pool, correction))["status"] == "pending"
        assert set(await receipts.message_ids()) == {other.message_id}

        assert await outbox.redrive(db_pool, destination="portal") == 1
        await eventually(lambda: _delivered(db_pool, correction))
    finally:
        stop.set()
        await task
        await destination.close()
    order = await db_pool.fetch("SELECT message_id FROM receiver_messages WHERE message_id = ANY($1::uuid[]) "
                                "ORDER BY first_received_at", [grade.message_id, correction.message_id])
    assert [r["message_id"] for r in order] == [grade.message_id, correction.message_id]


class Slow:
    """ASGI wrapper answering each request after ``seconds``, counting the requests."""

    def __init__(self, app, seconds: float) -> None:
        self.app, self.seconds, self.requests = app, seconds, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.requests += 1
            await asyncio.sleep(self.seconds)
        await self.app(scope, receive, send)


async def test_a_row_waiting_long_for_a_delivery_slot_keeps_its_lease_and_is_sent_once(db_pool, pair):
    """One slot, a portal taking 0.15 s: the last of 12 keys waits about 1.8 s, past its 1.2 s lease. The lease
    is renewed every half lease while the rows wait, so the relay's next claims cannot take them again
    (no second attempt is counted) and nothing is sent twice."""
    receipts = ReceiverLog(db_pool, "portal")
    portal = Slow(portal_receiver_app(verifier=pair[1], receipts=receipts), 0.15)
    messages = [signed_message(pair[0], partition_key=f"slot-{n}") for n in range(12)]
    await _enqueue(db_pool, *messages)
    options = dataclasses.replace(FAST, concurrency=1, lease_s=1.2, attempt_deadline_s=0.55)
    async with serving(portal) as base:
        destination = PortalDestination(f"{base}/envelopes")
        stop, task = await _running(Relay(db_pool, {"portal": destination}, options=options))
        try:
            for message in messages:
                await eventually(lambda m=message: _delivered(db_pool, m), timeout=15)
        finally:
            stop.set()
            await task
            await destination.close()
    assert await receipts.message_ids() == {m.message_id: 1 for m in messages}
    assert portal.requests == len(messages)
    assert await db_pool.fetchval("SELECT max(attempts) FROM outbox") == 1
