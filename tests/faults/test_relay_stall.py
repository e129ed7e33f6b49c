"""Issue 14's stall, replayed: a served relay whose PostgreSQL freezes at the moments the chaos run hit, then
dies the way a killed postmaster does (the old sockets stay silent, new connections work). The relay must notice
each stall (``relay.stalled``), recover without a restart, deliver every row exactly once to each receiver, and
still end within its grace on SIGTERM while PostgreSQL is frozen.

``ejx serve --components relay`` runs as a subprocess with PostgreSQL behind the fault proxy; the backlog and
the checks go straight to the test's database.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tests.delivery_support import counting_portal, eventually, serving
from tests.faultproxy import FaultProxy
from tests.faults.serve_support import Served, environment
from tests.faults.stall_support import GRACE_S, LEASE_S, LIMITS, backlog, first_copies_in_key_order

MOMENTS = (("claim", b"window_rows AS"),
           ("mark-delivered", b"status = 'delivered', delivered_at"),
           ("interagency queue write", b"INSERT INTO smev_queue"))
"""Where the chaos run's relay was when PostgreSQL stopped answering: the statement sent as it froze."""


async def _postmaster_killed(proxy: FaultProxy, pool: asyncpg.Pool) -> None:
    """What a killed postmaster leaves behind: the relay's sessions gone from the server (their locks with
    them), their sockets silent for good on the relay's side; new connections work."""
    await pool.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY($1::int[])",
                       proxy.upstream_ports())
    proxy.thaw(existing=False)


async def _stalls_noticed(served: Served, seen: int, *, stage: str | None = None) -> list[dict]:
    await served.wait_for("relay.stalled", count=seen + 1, timeout=LEASE_S + 10)
    return [entry for entry in served.events("relay.stalled")[seen:] if stage in (None, entry.get("stage"))]


async def test_a_relay_frozen_at_the_chaos_runs_moments_recovers_without_restart_and_delivers_once(
        serve_settings, pg_proxy: FaultProxy, db_pool) -> None:
    app, copies, arrival = counting_portal()
    async with serving(app) as base:
        frozen = pg_proxy.freeze_on(MOMENTS[0][1])
        rows = await backlog(db_pool, 0)
        served = Served(["--components", "relay"],
                        environment(serve_settings, EJX_PORTAL_URL=f"{base}/envelopes", **LIMITS))
        try:
            for phase, (moment, _) in enumerate(MOMENTS):
                await asyncio.wait_for(frozen.wait(), timeout=60)
                seen = len(served.events("relay.stalled"))
                await asyncio.sleep(LEASE_S + 1)  # frozen for longer than the lease
                noticed = await _stalls_noticed(served, seen, stage="delivery" if moment.startswith("inter") else None)
                assert noticed, f"no stall logged for a freeze during {moment}:\n{served.tail()}"
                if phase + 1 < len(MOMENTS):
                    frozen = pg_proxy.freeze_on(MOMENTS[phase + 1][1])
                await _postmaster_killed(pg_proxy, db_pool)
                started = time.monotonic()
                if phase + 1 < len(MOMENTS):
                    rows += await backlog(db_pool, phase + 1)

            async def all_delivered() -> bool:
                return await db_pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'delivered'") == rows
            try:
                await eventually(all_delivered, timeout=90, every=0.2)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{served.tail()}") from None
            recovered_s = time.monotonic() - started
            assert len(served.events("relay.started")) == 1 and served.process.poll() is None, "restarted"

            pg_proxy.freeze()
            await asyncio.sleep(1.5)
            code, took = await served.terminate(within=GRACE_S + 15)
        finally:
            pg_proxy.thaw()
            served.kill()
    assert code == 0, served.tail()
    assert took < GRACE_S + 5, took
    assert await db_pool.fetchval("SELECT count(*) FROM outbox WHERE status <> 'delivered'") == 0
    interagency = await db_pool.fetch("SELECT message_id FROM outbox WHERE destination = 'interagency'")
    queued = await db_pool.fetchrow("SELECT count(*) AS total, count(DISTINCT message_id) AS distinct_ids "
                                    "FROM smev_queue WHERE message_id = ANY($1::uuid[])",
                                    [r["message_id"] for r in interagency])
    assert queued["distinct_ids"] == queued["total"] == len(interagency) == rows // 2
    portal = {r["message_id"] for r in await db_pool.fetch("SELECT message_id FROM outbox WHERE destination = 'portal'")}
    assert set(copies) == portal and len(portal) == rows // 2
    assert await first_copies_in_key_order(db_pool, "portal", arrival)
    queue_order = [r["message_id"] for r in await db_pool.fetch("SELECT message_id FROM smev_queue ORDER BY seq")]
    assert await first_copies_in_key_order(db_pool, "interagency", queue_order)
    stalls = served.events("relay.stalled")
    print(f"{rows} rows through {len(MOMENTS)} freezes: {len(stalls)} stalls "
          f"({sorted({s.get('stage') for s in stalls})}), portal copies {sum(copies.values())} for {len(copies)} ids, "
          f"drained {recovered_s:.1f} s after the last thaw, SIGTERM while frozen → exit in {took:.1f} s")
