"""A router wired to fresh topics and the test's own database, for the router and replay tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from broker.domain.routing import RoutingTable
from broker.infra import kafka
from broker.settings import Settings
from broker.xml.schemas import Schemas
from broker.xml.signing import Verifier, XmlDsigSigner
from consumers.router import Router, RouterOptions
from tests.delivery_support import eventually, signing_pair


@dataclass
class Pipeline:
    settings: Settings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    signer: XmlDsigSigner
    verifier: Verifier
    schemas: Schemas

    def router(self, **kwargs) -> Router:
        options = kwargs.pop("options", RouterOptions(group_id=f"router-{uuid.uuid4().hex[:8]}", max_records=10))
        return Router(self.settings, pool=self.pool, producer=self.producer, signer=self.signer,
                      schemas=self.schemas, routing=kwargs.pop("routing", RoutingTable.load()), options=options,
                      **kwargs)

    async def produce(self, *values: bytes, headers=(), key: bytes = b"sch-77-0412") -> None:
        for value in values:
            await self.producer.send(self.settings.events_topic, value, key=key, headers=list(headers))
        await self.producer.flush()


@pytest.fixture(scope="session")
def schemas() -> Schemas:
    return Schemas.load()


@pytest.fixture(scope="session")
def pair():
    return signing_pair()


@pytest.fixture
async def pipeline(db_settings, db_pool, fresh_topic, schemas, pair) -> AsyncIterator[Pipeline]:
    suffix = uuid.uuid4().hex[:12]
    settings = db_settings.model_copy(update={
        "events_topic": fresh_topic, "dlq_topic": f"ejx.test.dlq.{suffix}",
        "interagency_topic": f"ejx.test.interagency.{suffix}"})
    await kafka.ensure_topics(settings, [settings.dlq_topic, settings.interagency_topic], partitions=1)
    try:
        async with kafka.running(kafka.producer(settings)) as producer:
            yield Pipeline(settings, db_pool, producer, pair[0], pair[1], schemas)
    finally:
        with contextlib.suppress(Exception):
            await kafka.delete_topics(settings, [settings.dlq_topic, settings.interagency_topic])


async def read_all(settings: Settings, topic: str) -> list:
    """Every committed record of ``topic`` now."""
    consumer = kafka.consumer(settings, topic, group_id=None)
    records = []
    async with kafka.running(consumer):
        partitions = consumer.assignment() or set()
        while not partitions:
            await consumer.getmany(timeout_ms=100)
            partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    return records


async def run_until(router: Router, done) -> None:  # noqa: ANN001 - a predicate coroutine
    """Run ``router`` until ``done()`` holds (within 90 s), then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop))
    try:
        await eventually(done, timeout=90)
    finally:
        stop.set()
        await task
