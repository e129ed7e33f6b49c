"""Fixtures of the fault tests: the fault proxy in front of the shared PostgreSQL, settings through it, and
Kafka clusters of the tests' own (temporary state dirs, ports 32000-32999) that may be killed at will, and a
broker of their own that advertises a fault proxy, so every connection to it can be cut."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from broker.devtools.infra.cluster import LocalKafka
from broker.infra import kafka
from broker.settings import Settings
from tests.delivery_support import free_port
from tests.faultproxy import FaultProxy
from tests.faults.kafka_support import own_kafka_settings
from tests.faults.serve_support import mint_keys


def through(dsn: str, proxy: FaultProxy) -> str:
    """``dsn`` with its host and port replaced by the proxy's."""
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{proxy.address}"))


@pytest.fixture
async def pg_proxy(settings: Settings) -> AsyncIterator[FaultProxy]:
    """A fault proxy whose upstream is the PostgreSQL of the suite (never itself frozen or stopped)."""
    parts = urlsplit(settings.database_dsn)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def proxied_settings(db_settings: Settings, pg_proxy: FaultProxy) -> Settings:
    """The test's own database, reached through ``pg_proxy``."""
    return db_settings.model_copy(update={"database_url": through(db_settings.database_dsn, pg_proxy)})


@pytest.fixture(scope="session")
def keyed_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir with ejx's signing key and SMEV key, shared by the subprocess tests."""
    state = tmp_path_factory.mktemp("ejx-state")
    mint_keys(state)
    return state


@pytest.fixture
async def serve_settings(proxied_settings: Settings, fresh_topic: str, keyed_state: Path
                         ) -> AsyncIterator[Settings]:
    """Settings for an ``ejx serve`` subprocess: PostgreSQL through the proxy, fresh topics, keys."""
    settings = proxied_settings.model_copy(update={
        "events_topic": fresh_topic, "dlq_topic": f"{fresh_topic}.dlq",
        "interagency_topic": f"{fresh_topic}.interagency", "http_port": free_port(), "state_dir": keyed_state})
    await kafka.ensure_topics(settings, [settings.dlq_topic, settings.interagency_topic], partitions=1)
    yield settings  # fresh_topic deletes the DLQ and interagency topics named after it


@pytest.fixture(scope="module")
async def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalKafka]:
    """Three KRaft nodes, one quorum, started once per module (three JVMs are not left idling through the
    rest of the suite); a test that kills nodes starts them again."""
    cluster = LocalKafka(own_kafka_settings(tmp_path_factory.mktemp("kafka-cluster"), brokers=3))
    started = time.monotonic()
    await asyncio.to_thread(cluster.up)
    print(f"\nthree-node Kafka up in {time.monotonic() - started:.1f} s at {cluster.address}")
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.down)


@pytest.fixture(scope="module")
async def proxied_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultProxy]:
    """A one-node Kafka of each module's own, reachable only through the returned proxy (the broker
    advertises the proxy's address, so no connection of a client bypasses it)."""
    settings = own_kafka_settings(tmp_path_factory.mktemp("kafka-proxied"), brokers=1)
    async with FaultProxy("127.0.0.1", settings.kafka_port) as proxy:
        broker = LocalKafka(settings, advertised=[proxy.address])
        await asyncio.to_thread(broker.up)
        try:
            yield proxy
        finally:
            await asyncio.to_thread(broker.down)


@pytest.fixture
async def outage_settings(db_settings: Settings, proxied_kafka: FaultProxy, keyed_state: Path) -> Settings:
    """Settings for an ``ejx serve`` subprocess on the proxied Kafka: fresh topics, keys, its own HTTP port."""
    suffix = uuid.uuid4().hex[:12]
    settings = db_settings.model_copy(update={
        "kafka_bootstrap": proxied_kafka.address, "kafka_brokers": 1, "events_topic": f"ejx.outage.{suffix}",
        "dlq_topic": f"ejx.outage.{suffix}.dlq", "interagency_topic": f"ejx.outage.{suffix}.interagency",
        "http_port": free_port(), "state_dir": keyed_state})
    await kafka.ensure_topics(settings, [settings.events_topic, settings.dlq_topic, settings.interagency_topic])
    return settings
