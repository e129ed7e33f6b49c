"""Issue 14's stall with a REAL PostgreSQL kill: the postmaster SIGKILLed while the relay's backends are
SIGSTOPped (orphaned, frozen: their sockets answer nothing), then ``LocalPostgres.up()`` ends the orphans and
starts again. The served relay, never restarted, must deliver every row exactly once.

A throwaway cluster of our own (temp state dir, a port in 35000-35999); the suite's PostgreSQL is never touched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import asyncpg
import pytest

from broker.devtools.infra.postgres import LocalPostgres
from broker.devtools.migrations import RECEIVER_TABLES
from broker.infra.migrations import PRODUCTION, migrate
from broker.settings import Settings
from tests.delivery_support import counting_portal, eventually, serving
from tests.faults.serve_support import Served, environment
from tests.faults.stall_support import LEASE_S, LIMITS, backlog, first_copies_in_key_order

pytestmark = pytest.mark.usefixtures("postgres_server")

PORTS = range(35000, 36000)


def _free_port_in_range() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {PORTS}")


@pytest.fixture
def own_postgres(tmp_path) -> LocalPostgres:
    cluster = LocalPostgres(Settings(state_dir=tmp_path, postgres_port=_free_port_in_range()))
    yield cluster
    # A failed test must not leave a frozen backend behind; waiting for the kills to land matters: a
    # postmaster still dying looked alive to down(), whose fast stop then waited 60 s for it in vain.
    cluster.end_processes()
    cluster.down()


async def _relay_backends(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row["pid"] for row in await conn.fetch(
            """SELECT pid FROM pg_stat_activity
               WHERE backend_type = 'client backend' AND datname = current_database() AND pid <> pg_backend_pid()""")]
    finally:
        await conn.close()


async def test_the_postmaster_killed_under_a_frozen_backend_the_unrestarted_relay_delivers_everything(
        own_postgres: LocalPostgres, serve_settings: Settings) -> None:
    dsn = await asyncio.to_thread(own_postgres.up)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, PRODUCTION, RECEIVER_TABLES)
        rows = await backlog(pool, 0, keys=4, per_key=25)
    finally:
        await pool.close()  # the kill must find only the relay's backends
    settings = serve_settings.model_copy(update={"database_url": dsn})
    app, copies, arrival = counting_portal(delay_s=0.05)  # deliveries are in flight when the kill comes
    async with serving(app) as base:
        # One interagency row at a time: its queue writes are still going on when the backends freeze.
        served = Served(["--components", "relay"], environment(settings, EJX_PORTAL_URL=f"{base}/envelopes",
                                                               EJX_INTERAGENCY_MAX_BATCH="1", **LIMITS))
        try:
            async def delivering() -> bool:
                return len(copies) >= 10
            await eventually(delivering, timeout=60, every=0.05)
            frozen = await _relay_backends(dsn)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            postmaster = int((own_postgres.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.sleep(LEASE_S + 1)  # the orphans live on, frozen, longer than the lease
            assert set(own_postgres.orphaned_backends()) & set(frozen), "no frozen backend outlived its postmaster"
            await asyncio.to_thread(own_postgres.up)
            restarted_s = time.monotonic() - killed_at

            async def all_delivered() -> bool:
                try:
                    check = await asyncpg.connect(dsn, timeout=5)
                except OSError:
                    return False
                try:
                    return await check.fetchval("SELECT count(*) FROM outbox WHERE status = 'delivered'") == rows
                finally:
                    await check.close()
            await eventually(all_delivered, timeout=60, every=0.2)
            drained_s = time.monotonic() - killed_at
            assert len(served.events("relay.started")) == 1 and served.process.poll() is None, "restarted"
            code, _ = await served.terminate(within=20)
        finally:
            served.kill()
    assert code == 0, served.tail()
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE status <> 'delivered'") == 0
        queued = await conn.fetchrow("SELECT count(*) AS total, count(DISTINCT message_id) AS distinct_ids "
                                     "FROM smev_queue")
        assert queued["total"] == queued["distinct_ids"] == rows // 2
        portal = {r["message_id"] for r in await conn.fetch(
            "SELECT message_id FROM outbox WHERE destination = 'portal'")}
        assert set(copies) == portal and len(portal) == rows // 2
        assert await first_copies_in_key_order(conn, "portal", arrival)
        queue_order = [r["message_id"] for r in await conn.fetch("SELECT message_id FROM smev_queue ORDER BY seq")]
        assert await first_copies_in_key_order(conn, "interagency", queue_order)
    finally:
        await conn.close()
    stalls = served.events("relay.stalled")
    assert any(s.get("stage") == "delivery" for s in stalls), "queue writes hung on the frozen backends unnoticed"
    print(f"{rows} rows, {len(frozen)} backends frozen, postmaster killed: up again after {restarted_s:.1f} s, "
          f"all delivered {drained_s:.1f} s after the kill; {len(stalls)} stalls "
          f"({sorted({s.get('stage') for s in stalls})}), portal copies {sum(copies.values())} for {len(copies)} ids")
