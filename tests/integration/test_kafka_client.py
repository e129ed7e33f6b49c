"""broker.infra.kafka's own rules: options refused at once, unreachable clusters reported as Failure."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import InvalidReplicationFactorError

from broker.domain.faults import Failure
from broker.infra import kafka
from broker.settings import Settings


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_consumer_refuses_to_override_commit_policy() -> None:
    with pytest.raises(ValueError, match="enable_auto_commit"):
        kafka.consumer(Settings(), "t", group_id="g", enable_auto_commit=True)


async def test_blank_ids_are_refused() -> None:
    with pytest.raises(ValueError):
        kafka.consumer(Settings(), "t", group_id=" ")
    with pytest.raises(ValueError):
        kafka.producer(Settings(), transactional_id="")


async def test_ensure_topics_refuses_zero_partitions() -> None:
    with pytest.raises(ValueError):
        await kafka.ensure_topics(Settings(), ["t"], partitions=0)


async def test_wait_ready_on_a_closed_port_is_a_retriable_failure() -> None:
    with pytest.raises(Failure) as raised:
        await kafka.wait_ready(f"127.0.0.1:{closed_port()}", timeout=1.5)
    assert raised.value.retriable


async def test_producer_start_on_a_closed_port_is_a_retriable_failure() -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{closed_port()}")
    with pytest.raises(Failure):
        async with kafka.running(kafka.producer(settings)):
            pass


def test_headers_round_trip() -> None:
    headers = {"fault-code": "InvalidContent", "description": "оценка вне шкалы"}
    assert kafka.decode_headers(kafka.encode_headers(headers)) == headers



async def partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(described["partitions"])


@pytest.mark.kafka
async def test_ensure_topics_leaves_an_existing_topic_as_it_is(
        kafka_settings: Settings, kafka_bootstrap: str, fresh_topic: str) -> None:
    await kafka.ensure_topics(kafka_settings, [fresh_topic], partitions=1)
    assert await partition_count(kafka_bootstrap, fresh_topic) == 3


@pytest.mark.kafka
async def test_a_topic_the_cluster_cannot_hold_is_refused_not_retried(
        kafka_settings: Settings, kafka_bootstrap: str) -> None:
    with pytest.raises(InvalidReplicationFactorError):
        await kafka.ensure_topics(kafka_settings, [f"ejx.test.{uuid.uuid4().hex[:12]}"], replication_factor=99)


@pytest.mark.kafka
async def test_describe_topic_waits_for_a_topic_the_broker_does_not_know_yet(kafka_settings: Settings) -> None:
    """A broker that metadata of a new topic has not reached yet answers UnknownTopicOrPartition, a
    retriable error: describe_topic asks again (a 3-node test failed on its first answer) and only then
    gives up, with a Failure."""
    name = f"ejx.test.{uuid.uuid4().hex[:12]}"

    async def create_soon() -> None:
        await asyncio.sleep(0.5)
        await kafka.ensure_topics(kafka_settings, [name], partitions=2)

    creating = asyncio.create_task(create_soon())
    try:
        partitions = await kafka.describe_topic(kafka_settings, name)
        assert sorted(partitions) == [0, 1]
    finally:
        await creating
        await kafka.delete_topics(kafka_settings, [name])
    with pytest.raises(Failure, match="UnknownTopicOrPartition"):
        await kafka.describe_topic(kafka_settings, f"ejx.test.{uuid.uuid4().hex[:12]}")
