"""The relay's wake-up call: a connection that LISTENs for committed outbox rows.

Every statement that inserts outbox rows notifies ``outbox.CHANNEL`` (migration 0010), and
PostgreSQL delivers the notification when the writer's transaction commits, so a relay that
listens claims a new row at once instead of at its next poll. A notification can be missed
(the connection is lost, the relay starts after the commit): the relay still polls slowly,
and this says "look now" again whenever it (re)connects.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import asyncpg
import structlog

from broker.delivery import outbox
from broker.domain.faults import Failure
from broker.infra.backoff import Backoff
from broker.infra.postgres import is_outage

log = structlog.get_logger(__name__)


async def listen(pool: asyncpg.Pool, on_commit: Callable[[], None], *, check_every_s: float,
                 acquire_timeout_s: float, backoff: Backoff, rng: random.Random) -> None:
    """Call ``on_commit`` for every notification, until cancelled; a connection that stops answering
    its periodic check is dropped and replaced (meanwhile only the relay's poll finds new rows)."""
    failures = 0
    while True:
        try:
            async with pool.acquire(timeout=acquire_timeout_s) as conn:
                try:
                    await conn.add_listener(outbox.CHANNEL, lambda *_: on_commit())
                    failures = 0
                    on_commit()  # rows may have committed while nobody listened
                    while True:
                        await asyncio.sleep(check_every_s)
                        await conn.fetchval("SELECT 1", timeout=check_every_s)
                except BaseException:
                    conn.terminate()  # never back into the pool with a listener or a stuck query
                    raise
        except Exception as error:
            if not (isinstance(error, Failure | TimeoutError) or is_outage(error)):
                raise
            if pool.is_closing():
                return  # the process is shutting down: nothing left to wake
            failures += 1
            log.warning("relay.listen_lost", error=repr(error))
            await asyncio.sleep(backoff.delay(failures, rng=rng))
