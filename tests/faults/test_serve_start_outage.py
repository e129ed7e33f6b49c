"""Kafka gone just after ``ejx serve`` found it up, while its clients start: the component waits, with a
log line per try, and serves once Kafka is back, instead of exiting "Kafka is unreachable".

The moment is exact: the proxy freezes as a client sends the first request naming ``trigger`` (ingest: the
events topic, in serve's CreateTopics, the first request after the dependency check; the router: its group,
as its consumer looks for the group coordinator), then every connection is reset and new ones refused
until a few start tries have failed.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from adapters import examples
from broker.infra import kafka
from broker.settings import Settings
from tests.delivery_support import eventually
from tests.faultproxy import FaultProxy
from tests.faults.serve_support import Served, environment
from tests.integration.ingest_support import SCHOOL, bearer, read_topic, register

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.own_kafka]

TRIES_WHILE_DOWN = 2
"""Start tries that must have failed (and been logged) before Kafka comes back."""


KAFKA_TIMEOUT_S = 3.0
"""A client start's bound in the served process: a start that cannot finish fails after it."""


def serve(components: str, settings: Settings) -> Served:
    return Served(["--components", components], environment(settings, EJX_KAFKA_TIMEOUT_S=str(KAFKA_TIMEOUT_S)))


async def start_through_an_outage(served: Served, proxy: FaultProxy, *, trigger: str, component: str) -> None:
    """Let ``served`` pass its dependency check, cut Kafka as a client sends ``trigger``, restore it after
    :data:`TRIES_WHILE_DOWN` failed tries to start ``component``."""
    frozen = proxy.freeze_on(trigger.encode())
    await asyncio.wait_for(frozen.wait(), 60)
    async with proxy.unreachable():
        proxy.thaw()  # what is refused now is refused at once; after the block, connections flow
        await eventually(lambda: _retried(served, component), timeout=60, every=0.1)
    assert served.events("startup.waiting") == [], "the dependency check itself saw the outage"
    assert served.process.poll() is None, served.tail()
    retries = _retries(served, component)
    assert [entry["attempt"] for entry in retries] == list(range(1, len(retries) + 1))


async def _retried(served: Served, component: str) -> bool:
    if served.process.poll() is not None:
        raise AssertionError(f"ejx serve exited ({served.process.returncode}) during the outage:\n{served.tail()}")
    return len(_retries(served, component)) >= TRIES_WHILE_DOWN


def _retries(served: Served, component: str) -> list[dict]:
    return [entry for entry in served.events("startup.retrying") if entry["component"] == component]


async def test_the_router_outlasts_kafka_going_away_while_it_starts(outage_settings, proxied_kafka) -> None:
    served = serve("router", outage_settings)
    try:
        await start_through_an_outage(served, proxied_kafka, trigger="ejx-router", component="Router")
        await served.wait_for("router.started", timeout=90)
        async with kafka.running(kafka.producer(outage_settings)) as producer:
            await producer.send_and_wait(outage_settings.events_topic, b"<not-closed>", key=b"k")
        # The router serves: it reads the event and sends it to the DLQ.
        await eventually(lambda: _dead_letters(outage_settings, 1), timeout=60, every=0.5)
        assert served.process.poll() is None, served.tail()
        assert len(served.events("serve.started")) == 1
        code, _ = await served.terminate(within=30)
    finally:
        served.kill()
    assert code == 0, served.tail()


async def test_ingest_outlasts_kafka_going_away_while_it_starts(outage_settings, proxied_kafka, db_pool) -> None:
    tokens = await register(db_pool)
    served = serve("ingest", outage_settings)
    try:
        await start_through_an_outage(served, proxied_kafka, trigger=outage_settings.events_topic, component="runtime")
        await served.wait_for("serve.started", timeout=90)
        event = {**examples.EVENTS["GradePosted"], "source_record_id": "after-start", "school_id": SCHOOL}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{outage_settings.http_port}",
                                     headers=bearer(tokens.vendor), timeout=60) as client:
            answer = await client.post("/v1/events", json=[event])
        assert answer.status_code == 202, answer.text
        assert served.process.poll() is None, served.tail()
        code, _ = await served.terminate(within=30)
    finally:
        served.kill()
    assert code == 0, served.tail()


async def _dead_letters(settings: Settings, count: int) -> bool:
    return len(await read_topic(settings, settings.dlq_topic, settle_s=5)) >= count
