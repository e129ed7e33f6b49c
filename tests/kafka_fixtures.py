"""Kafka fixtures: the real broker of ``Settings().kafka_address`` and a fresh topic per test.

A broker that does not answer fails the test (never skips it): the integration
tier means nothing without the real thing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from broker.domain.faults import Failure
from broker.infra import kafka
from broker.settings import Settings

READY_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def kafka_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
async def kafka_bootstrap(kafka_settings: Settings) -> str:
    """Bootstrap address of a broker that answered a metadata request."""
    address = kafka_settings.kafka_address
    try:
        await kafka.wait_ready(address, timeout=READY_TIMEOUT)
    except Failure as failure:
        pytest.fail(f"Kafka at {address} is unreachable ({failure.description}); "
                    "run `ejx infra up` or set EJX_KAFKA_BOOTSTRAP", pytrace=False)
    return address


@pytest.fixture
async def fresh_topic(kafka_settings: Settings, kafka_bootstrap: str) -> AsyncIterator[str]:
    """A new topic with 3 partitions, unique to the test; deleted afterwards (best effort), with the DLQ and
    interagency topics tests name after it (``<name>.dlq``, ``<name>.interagency``), which the components
    they start create: left behind, they were ~400 topics per suite run on a developer's broker."""
    name = f"ejx.test.{uuid.uuid4().hex[:12]}"
    await kafka.ensure_topics(kafka_settings, [name], partitions=3)
    yield name
    try:
        await kafka.delete_topics(kafka_settings, [name, *(f"{name}.{kind}" for kind in ("dlq", "interagency"))])
    except Failure:
        pass
