"""A three-node Kafka losing nodes under ingest and the router: the partition leader, then the active
controller, then two at once. Nothing acknowledged is lost, nothing is routed twice, no component is
restarted, and ingest answers 503 only while fewer than two replicas are in sync.

The cluster is the tests' own (``kafka_cluster``, ports 32000-32999); the database is the shared
PostgreSQL's fresh per-test one. Ingest and the router run in this process against both.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from adapters import examples
from adapters.publisher import PublisherOptions
from broker.devtools.infra.cluster import LocalKafka
from broker.domain.faults import Failure
from broker.domain.routing import RoutingTable
from broker.infra import kafka
from broker.settings import Settings
from consumers.router import Router, RouterOptions
from tests.delivery_support import eventually, signing_pair
from tests.integration.ingest_support import SCHOOL, api, bearer, ingest_service, register, schemas

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.own_kafka]

PUBLISH_TIMEOUT_S = PublisherOptions().timeout_s
"""The ingest publisher's bound on one batch (production's): the longest a 503 may take."""


@pytest.fixture
async def cluster_settings(db_settings: Settings, kafka_cluster: LocalKafka) -> AsyncIterator[Settings]:
    """The test's database and fresh topics on the three-node cluster (replication factor 3, min ISR 2)."""
    suffix = uuid.uuid4().hex[:12]
    settings = db_settings.model_copy(update={
        "kafka_bootstrap": kafka_cluster.address, "kafka_brokers": 3, "events_topic": f"ejx.cluster.{suffix}",
        "dlq_topic": f"ejx.cluster.{suffix}.dlq", "interagency_topic": f"ejx.cluster.{suffix}.interagency"})
    topics = [settings.events_topic, settings.dlq_topic, settings.interagency_topic]
    await kafka.ensure_topics(settings, topics)
    yield settings
    await asyncio.to_thread(kafka_cluster.up)  # every node back for the next test
    await kafka.delete_topics(settings, topics)


@dataclass
class Vendor:
    """Posts batches of grades like a vendor's system: a 503 is retried with the same body after a pause."""

    client: httpx.AsyncClient
    token: str
    accepted: dict[str, str] = field(default_factory=dict)
    """Idempotency key → event id of every event answered 202."""
    answers: Counter = field(default_factory=Counter)
    refused_at: list[float] = field(default_factory=list)
    """When each 503 came (monotonic)."""
    sent: int = 0

    async def post(self, count: int = 5) -> httpx.Response:
        """One new batch until it is accepted; the last answer."""
        batch = [{**examples.EVENTS["GradePosted"], "source_record_id": f"g-{self.sent + n}", "school_id": SCHOOL}
                 for n in range(count)]
        self.sent += count
        while True:
            answer = await self.client.post("/v1/events", json=batch, headers=bearer(self.token))
            self.answers[answer.status_code] += 1
            if answer.status_code == 202:
                for receipt in answer.json()["events"]:
                    self.accepted[receipt["idempotency_key"]] = receipt["event_id"]
                return answer
            assert answer.status_code == 503 and answer.headers.get("Retry-After"), answer.text
            self.refused_at.append(time.monotonic())
            await asyncio.sleep(0.5)

    async def keep_posting(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.post()


@dataclass
class Running:
    """Ingest and the router, each started once for the whole test."""

    vendor: Vendor
    router: asyncio.Task
    settings: Settings
    pool: object

    async def routed(self) -> set[str]:
        rows = await self.pool.fetch("SELECT event_id::text FROM inbox WHERE consumer = 'router'")
        return {row["event_id"] for row in rows}


@pytest.fixture
async def running(cluster_settings: Settings, db_pool) -> AsyncIterator[Running]:  # noqa: ANN001
    tokens = await register(db_pool)
    signer, _ = signing_pair()
    stop = asyncio.Event()
    options = PublisherOptions(producers=2)
    async with ingest_service(cluster_settings, db_pool, options=options) as service, \
            api(service, db_pool) as client, kafka.running(kafka.producer(cluster_settings)) as producer:
        router = Router(cluster_settings, pool=db_pool, producer=producer, signer=signer, schemas=schemas(),
                        routing=RoutingTable.load(), options=RouterOptions(group_id=f"router-{uuid.uuid4().hex[:8]}"))
        task = asyncio.create_task(router.run(stop))
        try:
            yield Running(Vendor(client, tokens.vendor), task, cluster_settings, db_pool)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


def school_partition(settings: Settings) -> int:
    """The partition all of SCHOOL's events go to (the producers' default partitioner on the key)."""
    partitions = list(range(settings.topic_partitions))
    return DefaultPartitioner()(SCHOOL.encode(), partitions, partitions)


async def full_again(cluster: LocalKafka, topic: str, partition: int, *, timeout: float = 120) -> None:
    await eventually(lambda: _has_three(cluster, topic, partition), timeout=timeout, every=0.5)


async def _has_three(cluster: LocalKafka, topic: str, partition: int) -> bool:
    try:
        return len(await cluster.in_sync(topic, partition)) == 3
    except Failure:  # a node just restarted may not answer yet: ask again
        return False


async def test_topics_on_three_nodes_have_three_replicas_and_need_two_in_sync(cluster_settings: Settings) -> None:
    partitions = await kafka.describe_topic(cluster_settings, cluster_settings.events_topic)
    assert {len(state.replicas) for state in partitions.values()} == {3}
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster_settings.kafka_address)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                                   cluster_settings.events_topic)])
    finally:
        await admin.close()
    configs = {name: value for name, value, *_ in response.resources[0][4]}
    assert configs["min.insync.replicas"] == "2"
    assert configs["unclean.leader.election.enable"] == "false"


async def test_killing_the_partition_leader_then_the_active_controller_loses_and_doubles_nothing(
        kafka_cluster: LocalKafka, running: Running) -> None:
    topic, partition = running.settings.events_topic, school_partition(running.settings)
    await full_again(kafka_cluster, topic, partition)
    await running.vendor.post()
    stop_posting = asyncio.Event()
    posting = asyncio.create_task(running.vendor.keep_posting(stop_posting))
    timings = {}
    leaderless: list[tuple[float, float]] = []
    """From each kill until another node took over."""
    try:
        for victim_is in ("partition leader", "active controller"):
            await asyncio.sleep(2)  # a few batches under a healthy cluster first
            if victim_is == "partition leader":
                victim = await kafka_cluster.leader(topic, partition)
            else:
                victim = kafka_cluster.active_controller()
            assert victim in (1, 2, 3), victim_is
            before = len(running.vendor.accepted)
            killed = time.monotonic()
            await asyncio.to_thread(kafka_cluster.kill, victim)
            if victim_is == "partition leader":
                await eventually(lambda: _led_by_other(kafka_cluster, topic, partition, victim), timeout=60)
            else:
                await eventually(lambda: _controller_other(kafka_cluster, victim), timeout=60)
            taken_over = time.monotonic() - killed
            leaderless.append((killed, killed + taken_over))
            await eventually(lambda: _more(running.vendor, before + 10), timeout=90)  # accepted with one down
            await asyncio.to_thread(kafka_cluster.start, victim)
            await full_again(kafka_cluster, topic, partition)
            timings[victim_is] = (victim, round(taken_over, 1), round(time.monotonic() - killed, 1))
            assert not running.router.done(), "the router stopped"
    finally:
        stop_posting.set()
        await asyncio.wait_for(posting, 120)

    accepted = set(running.vendor.accepted.values())
    await eventually(lambda: _all_routed(running, accepted), timeout=120, every=0.5)
    # A grade has one envelope, for the portal: a second routing of any would be a second row.
    assert await running.pool.fetchval("SELECT count(*) FROM outbox") == len(accepted)
    assert not running.router.done(), "the router stopped"
    # A 503 only for a batch in flight while the dead node still led: one node down is no outage.
    late = [at for at in running.vendor.refused_at
            if not any(start <= at <= end + PUBLISH_TIMEOUT_S + 2 for start, end in leaderless)]
    assert not late, (late, leaderless)
    print(f"\nkilled (node, s until another took over, s until all three in sync again): {timings}; "
          f"{len(accepted)} events accepted and routed; answers {dict(running.vendor.answers)}")


async def test_ingest_answers_503_with_two_nodes_down_and_202_once_one_is_back(
        kafka_cluster: LocalKafka, running: Running) -> None:
    topic, partition = running.settings.events_topic, school_partition(running.settings)
    await full_again(kafka_cluster, topic, partition)
    await running.vendor.post()
    leader = await kafka_cluster.leader(topic, partition)
    follower = next(node for node in (1, 2, 3) if node != leader)
    for node in (follower, leader):
        await asyncio.to_thread(kafka_cluster.kill, node)
    batch = [{**examples.EVENTS["GradePosted"], "source_record_id": "while-down", "school_id": SCHOOL}]

    asked = time.monotonic()
    answer = await running.vendor.client.post("/v1/events", json=batch, headers=bearer(running.vendor.token))
    took = time.monotonic() - asked
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["code"] == "Failure"
    assert took < PUBLISH_TIMEOUT_S + 5, took

    back = time.monotonic()
    await asyncio.to_thread(kafka_cluster.start, follower)

    async def accepted_again() -> bool:
        again = await running.vendor.client.post("/v1/events", json=batch, headers=bearer(running.vendor.token))
        assert again.status_code in (202, 503), again.text
        return again.status_code == 202
    await eventually(accepted_again, timeout=120, every=1)
    recovered = time.monotonic() - back
    event_id = (await running.vendor.client.post("/v1/events", json=batch,
                                                 headers=bearer(running.vendor.token))).json()["event_ids"][0]
    await eventually(lambda: _all_routed(running, {event_id, *running.vendor.accepted.values()}), timeout=120)
    print(f"\ntwo of three down: 503 in {took:.1f} s; one back: 202 again {recovered:.1f} s after its start")


async def _led_by_other(cluster: LocalKafka, topic: str, partition: int, victim: int) -> bool:
    try:
        return (await cluster.leader(topic, partition)) not in (-1, victim)
    except Failure:  # during the election the metadata question itself may find only the dead node: ask again
        return False


async def _controller_other(cluster: LocalKafka, victim: int) -> bool:
    return cluster.active_controller() not in (-1, victim)


async def _more(vendor: Vendor, count: int) -> bool:
    return len(vendor.accepted) >= count


async def _all_routed(running: Running, event_ids: set[str]) -> bool:
    return event_ids <= await running.routed()
