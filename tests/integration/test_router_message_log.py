"""The router logs every envelope it signs in the batch's own transaction: log records == outbox rows."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from broker.audit import message_log
from tests.delivery_support import event_xml, term_grade_xml
from tests.integration.router_support import (  # noqa: F401  (fixtures)
    pair,
    pipeline,
    read_all,
    run_until,
    schemas,
)


class Crash(BaseException):
    """The process dying between the PostgreSQL commit and the offset commit."""


async def _routed(pool, n: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'router'") == n


async def test_every_outbox_row_has_its_log_record_and_nothing_else_is_logged(pipeline):
    grades, terms = 24, 6
    await pipeline.produce(*(event_xml(f"g-{i}") for i in range(grades)),
                           *(term_grade_xml(f"t-{i}") for i in range(terms)))

    dry = await pipeline.router().process(await read_all(pipeline.settings, pipeline.settings.events_topic),
                                          dry_run=True)
    assert dry.messages == grades + 2 * terms
    assert await pipeline.pool.fetchval("SELECT count(*) FROM message_log") == 0, "a dry run logs nothing"

    async def crash(outcome):
        raise Crash()
    first = pipeline.router(after_commit=crash)
    with pytest.raises(Crash):
        await asyncio.wait_for(first.run(asyncio.Event()), timeout=120)
    await run_until(pipeline.router(options=first._options), lambda: _routed(pipeline.pool, grades + terms))

    outbox = await pipeline.pool.fetch("SELECT message_id, recipient, payload FROM outbox")
    logged = await pipeline.pool.fetch(
        "SELECT message_id, participant, payload_sha256, payload, direction, kind FROM message_log ORDER BY sequence")
    assert len(outbox) == grades + 2 * terms
    assert sorted((r["message_id"], r["recipient"], hashlib.sha256(r["payload"]).digest()) for r in outbox) == \
        sorted((r["message_id"], r["participant"], r["payload_sha256"]) for r in logged)
    assert {r["message_id"]: r["payload"] for r in outbox} == {r["message_id"]: r["payload"] for r in logged}
    assert {(r["direction"], r["kind"]) for r in logged} == {("out", "envelope")}
    assert {r["participant"] for r in logged} == {"EPGU", "RSMEV"}
    verdict = await message_log.verify(pipeline.pool)
    assert (verdict.checked, verdict.broken) == (len(outbox), None)
