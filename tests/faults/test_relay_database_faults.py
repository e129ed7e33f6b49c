"""The relay carries on when its PostgreSQL connections die or go silent (issue 14: the stalled relay).

The first two put the fault proxy between the relay's pool and PostgreSQL; rows are
written on a direct pool, so only the relay sees the fault. The third hangs a destination's
attempt, as a queue write on a dead socket does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from structlog.testing import capture_logs

from broker.delivery import outbox
from broker.delivery.destinations import PortalDestination
from broker.delivery.relay import Relay, RelayOptions
from broker.infra.backoff import Backoff
from broker.infra.postgres import UnitOfWork, create_pool
from broker.xml.envelope import new_message_id
from tests.delivery_support import counting_portal, eventually, metric, serving

LEASE_S = 3.0
"""The relay's lease, and so its watchdog's patience."""


async def _enqueue(pool: asyncpg.Pool, count: int, *, key: str = "sch-1") -> None:
    messages = [outbox.NewMessage(message_id=new_message_id(), destination="portal", partition_key=key,
                                  payload=b"<Envelope/>", recipient="EPGU", message_type="GradePosted")
                for _ in range(count)]
    async with UnitOfWork(pool) as uow:
        await outbox.enqueue(uow.connection, messages)
        await uow.commit()


async def _delivered(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'delivered'")


@asynccontextmanager
async def _running_relay(settings, copies_url: str) -> AsyncIterator[Relay]:
    pool = await create_pool(settings, max_size=4)
    destination = PortalDestination(copies_url)
    relay = Relay(pool, {"portal": destination}, options=RelayOptions(
        lease_s=LEASE_S, idle_poll_s=0.05, backoff=Backoff(0.05, 0.2)))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await destination.close()
        pool.terminate()


async def test_a_relay_stuck_on_connections_that_never_answer_notices_and_recovers(
        proxied_settings, pg_proxy, db_pool) -> None:
    app, copies, _ = counting_portal()
    async with serving(app) as base, _running_relay(proxied_settings, f"{base}/envelopes"):
        await _enqueue(db_pool, 1)
        await eventually(lambda: _delivered(db_pool), timeout=20)
        stalls = metric("ejx_relay_stalls_total")

        # PostgreSQL "restarts": the relay's sockets go silent for good (no reset ever comes),
        # new connections work. The claim in flight waits on a dead socket.
        pg_proxy.freeze()
        await asyncio.sleep(0.5)
        pg_proxy.thaw(existing=False)
        started = time.monotonic()
        await _enqueue(db_pool, 5)

        async def all_delivered() -> bool:
            return await _delivered(db_pool) == 6
        await eventually(all_delivered, timeout=LEASE_S + 10, every=0.1)
        recovered_s = time.monotonic() - started
    assert metric("ejx_relay_stalls_total") > stalls
    assert recovered_s < LEASE_S + 10
    print(f"stall noticed and delivery resumed {recovered_s:.1f} s after the connections went silent")


async def test_backends_terminated_mid_claim_are_an_outage_and_the_relay_carries_on(
        proxied_settings, pg_proxy, db_pool) -> None:
    app, copies, _ = counting_portal(delay_s=0.02)
    async with serving(app) as base, _running_relay(proxied_settings, f"{base}/envelopes"):
        pg_proxy.delay_s = 0.05  # every claim is in flight long enough to be hit
        await _enqueue(db_pool, 40, key="sch-1")
        await _enqueue(db_pool, 40, key="sch-2")
        killed = 0
        for _ in range(6):
            await asyncio.sleep(0.3)
            killed += await db_pool.fetchval(
                """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()""")
        pg_proxy.delay_s = 0.0

        async def all_delivered() -> bool:
            return await _delivered(db_pool) == 80
        await eventually(all_delivered, timeout=60, every=0.2)
    assert killed > 0
    assert set(copies.values()) >= {1} and len(copies) == 80


class _HangingOnce:
    """A destination whose first attempt never returns (a queue write on a dead socket); later ones deliver."""

    name = "portal"
    max_batch = 1

    def __init__(self) -> None:
        self.attempts = 0
        self.delivered: list = []

    async def deliver(self, message) -> None:
        self.attempts += 1
        if self.attempts == 1:
            await asyncio.Event().wait()
        self.delivered.append(message.message_id)

    async def close(self) -> None: ...


async def test_an_attempt_that_never_returns_is_abandoned_before_the_lease_runs_out_and_retried(db_pool) -> None:
    destination = _HangingOnce()
    relay = Relay(db_pool, {"portal": destination}, options=RelayOptions(
        lease_s=LEASE_S, idle_poll_s=0.05, backoff=Backoff(0.05, 0.2)))
    await _enqueue(db_pool, 3)
    stalls = metric("ejx_relay_stalls_total")
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(relay.run(stop))
        try:
            async def all_delivered() -> bool:
                return await _delivered(db_pool) == 3
            await eventually(all_delivered, timeout=LEASE_S * 3, every=0.05)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    stalled = [entry for entry in logs if entry["event"] == "relay.stalled"]
    assert [entry["stage"] for entry in stalled] == ["delivery"] and stalled[0]["deadline_s"] < LEASE_S / 2
    assert metric("ejx_relay_stalls_total") == stalls + 1
    rows = await db_pool.fetch("SELECT message_id, attempts FROM outbox ORDER BY id")
    assert destination.delivered == [row["message_id"] for row in rows], "order per key kept, each once"
    assert [row["attempts"] for row in rows] == [2, 1, 1]
