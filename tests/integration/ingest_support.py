"""Shared pieces of the ingest tests: a registry with two vendors, the service on real Kafka and
PostgreSQL, the API around it, and a read_committed reader of the whole topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import httpx
from aiokafka import TopicPartition
from fastapi import FastAPI

from adapters.ingest import IngestService
from adapters.ledger import IngestLedger
from adapters.payload import PayloadLimits
from adapters.publisher import KafkaPublisher, PublisherOptions
from adapters.rest import ingest_router
from broker.access.credentials import Credentials
from broker.access.gate import Gate
from broker.access.registry import Registry, School
from broker.infra import kafka
from broker.settings import Settings
from broker.xml.schemas import Schemas

VENDOR = "dnevnik-plus"
OTHER_VENDOR = "shkola-online"
SCHOOL = "sch-770001"
OTHER_SCHOOL = "sch-880002"

_SCHEMAS: list[Schemas] = []


def schemas() -> Schemas:
    if not _SCHEMAS:
        _SCHEMAS.append(Schemas.load())
    return _SCHEMAS[0]


@dataclass(frozen=True)
class Tokens:
    vendor: str
    other_vendor: str


async def register(pool: asyncpg.Pool) -> Tokens:
    """Two vendors, each with one school."""
    registry = Registry(pool)
    tokens = Tokens(await registry.add_vendor(VENDOR), await registry.add_vendor(OTHER_VENDOR))
    await registry.import_schools([School(SCHOOL, "Школа № 1", "Центральный", VENDOR),
                                   School(OTHER_SCHOOL, "Школа № 2", "Северный", OTHER_VENDOR)])
    return tokens


@asynccontextmanager
async def ingest_service(settings: Settings, pool: asyncpg.Pool, *, limits: PayloadLimits = PayloadLimits(),
                         options: PublisherOptions = PublisherOptions(producers=2, timeout_s=10),
                         producer_factory=None) -> AsyncIterator[IngestService]:  # noqa: ANN001
    publisher = KafkaPublisher(settings, options=options, producer_factory=producer_factory)
    service = IngestService(registry=Registry(pool), ledger=IngestLedger(pool), sink=publisher,
                            schemas=schemas(), limits=limits)
    try:
        yield service
    finally:
        service.close()
        await publisher.stop()


def api(service: IngestService, pool: asyncpg.Pool) -> httpx.AsyncClient:
    """The vendors' routes around ``service``, authenticating against ``pool``'s credentials."""
    app = FastAPI()
    app.include_router(ingest_router(service, Gate(Credentials(pool))))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ejx.test", timeout=60)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Consumed:
    key: bytes
    value: bytes
    headers: dict[str, str]
    partition: int


async def read_topic(settings: Settings, topic: str, *, settle_s: float = 30.0) -> list[Consumed]:
    """Every committed record of ``topic``, once no transaction on it is open any more.

    A producer's commit returns before the coordinator has written the commit
    markers, so right after a 202 the last stable offset may still be short of
    the records. We wait until it reaches the high watermark (every transaction
    decided), then read everything up to it with read_committed.
    """
    committed = kafka.consumer(settings, group_id=None)
    everything = kafka.consumer(settings, group_id=None, isolation_level="read_uncommitted")
    async with kafka.running(committed), kafka.running(everything):
        partitions = await _partitions(committed, topic)
        deadline = asyncio.get_running_loop().time() + settle_s
        while True:
            stable = await committed.end_offsets(partitions)
            written = await everything.end_offsets(partitions)
            if stable == written:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"transactions on {topic} still open after {settle_s} s: "
                                     f"stable {stable}, written {written}")
            await asyncio.sleep(0.05)
        committed.assign(partitions)
        await committed.seek_to_beginning(*partitions)
        records: list[Consumed] = []
        while [tp for tp in partitions if await committed.position(tp) < stable[tp]]:
            batch = await committed.getmany(*partitions, timeout_ms=1000)
            for messages in batch.values():
                records.extend(Consumed(m.key, m.value, kafka.decode_headers(m.headers), m.partition)
                               for m in messages)
        return records


async def _partitions(reader, topic: str) -> list[TopicPartition]:  # noqa: ANN001
    for _ in range(50):
        found = reader.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        await reader._client.force_metadata_update()  # noqa: SLF001 - a topic created a moment ago
    raise AssertionError(f"topic {topic} has no partitions")


async def ledger_size(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM ingest_keys")
