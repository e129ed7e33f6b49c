"""Answers lost on the way back: the outcome is unknown to the sender, so it retries and the receiver's
de-duplication makes the repeat harmless — nothing doubled, nothing lost.

- the portal's 2xx cut before the relay reads it (reference portal receiver, fault proxy in front);
- the router's COMMIT reaching PostgreSQL, its answer cut (fault proxy in front of the router's pool).
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import TopicPartition

from broker.delivery import outbox
from broker.delivery.destinations import PortalDestination
from broker.delivery.relay import Relay, RelayOptions
from broker.devtools.receivers import ReceiverLog, portal_receiver_app
from broker.domain.routing import RoutingTable
from broker.infra import kafka
from broker.infra.backoff import Backoff
from broker.infra.postgres import UnitOfWork, create_pool
from consumers.router import Router, RouterOptions
from tests.delivery_support import event_xml, eventually, serving, signed_message
from tests.faultproxy import FaultProxy
from tests.integration.router_support import Pipeline, pair, pipeline, schemas  # noqa: F401  (fixtures)

ROWS = 6


async def test_a_portal_answer_cut_before_the_relay_reads_it_is_retried_and_deduplicated(db_pool, pair) -> None:
    signer, verifier = pair
    messages = [signed_message(signer, partition_key=f"sch-{i % 2}") for i in range(ROWS)]
    async with UnitOfWork(db_pool) as uow:
        await outbox.enqueue(uow.connection, messages)
        await uow.commit()
    receipts = ReceiverLog(db_pool, "portal")
    async with serving(portal_receiver_app(verifier=verifier, receipts=receipts)) as base:
        host, port = base.removeprefix("http://").split(":")
        async with FaultProxy(host, int(port)) as proxy:
            cut = proxy.cut_answer(b"POST /envelopes", after_bytes=0)
            destination = PortalDestination(f"http://{proxy.address}/envelopes")
            relay = Relay(db_pool, {"portal": destination}, options=RelayOptions(
                idle_poll_s=0.05, backoff=Backoff(0.05, 0.2)))
            stop = asyncio.Event()
            task = asyncio.create_task(relay.run(stop))
            try:
                async def all_delivered() -> bool:
                    return await db_pool.fetchval(
                        "SELECT count(*) FROM outbox WHERE status = 'delivered'") == ROWS
                await eventually(all_delivered, timeout=30, every=0.1)
            finally:
                stop.set()
                await task
                await destination.close()
    report = await receipts.report()
    assert cut.is_set()
    assert set(await receipts.message_ids()) == {m.message_id for m in messages}
    assert report.received == ROWS and report.duplicates >= 1, report
    assert await db_pool.fetchval("SELECT max(attempts) FROM outbox") == 2


async def test_a_commit_whose_answer_is_cut_is_retried_and_the_inbox_deduplicates(pipeline: Pipeline) -> None:
    records = [f"commit-cut-{uuid.uuid4().hex[:8]}-{i}" for i in range(ROWS)]
    await pipeline.produce(*(event_xml(record, school="sch-1") for record in records), key=b"sch-1")
    host, port = "127.0.0.1", int(pipeline.settings.database_dsn.rsplit(":", 1)[1].split("/")[0])
    async with FaultProxy(host, port) as proxy:
        dsn = pipeline.settings.database_dsn.replace(f"127.0.0.1:{port}", proxy.address)
        proxied = pipeline.settings.model_copy(update={"database_url": dsn})
        pool = await create_pool(proxied, max_size=4)
        try:
            cut = proxy.cut_answer(b"COMMIT", after_bytes=0)
            group = f"router-{uuid.uuid4().hex[:8]}"
            router = Router(proxied, pool=pool, producer=pipeline.producer, signer=pipeline.signer,
                            schemas=pipeline.schemas, routing=RoutingTable.load(),
                            options=RouterOptions(group_id=group, max_records=ROWS))
            stop = asyncio.Event()
            task = asyncio.create_task(router.run(stop))
            try:
                async with kafka.running(kafka.consumer(pipeline.settings, group_id=group)) as probe:
                    partitions = [TopicPartition(pipeline.settings.events_topic, p) for p in range(3)]

                    async def retried_and_committed() -> bool:
                        """Offsets are committed only after a batch succeeded: past the cut commit, that is the
                        retry, done (with its doubled write, had the inbox let one through)."""
                        if not cut.is_set():
                            return False
                        return sum([await probe.committed(tp) or 0 for tp in partitions]) == ROWS
                    await eventually(retried_and_committed, timeout=60, every=0.1)
            finally:
                stop.set()
                await task
        finally:
            pool.terminate()
    rows = await pipeline.pool.fetch("SELECT idempotency_key, destination FROM outbox")
    assert rows and len(rows) == len(set(map(tuple, rows))), "an event was routed twice"
    assert {r["idempotency_key"] for r in rows} == {f"dnevnik-plus/{record}/1" for record in records}, "lost"
