"""/metrics, /healthz, /readyz and the pipeline view against the real PostgreSQL and Kafka."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from broker.access.credentials import Kind
from broker.analytics.api import monitoring_router
from broker.ops import metrics
from broker.ops.metrics import HealthOptions, health_router, kafka_probe, postgres_probe
from tests import access_support
from tests.delivery_support import event_xml, metric
from tests.integration.router_support import pair, pipeline, run_until, schemas  # noqa: F401  (fixtures)


async def add_outbox_rows(pool, destination: str, **statuses: int) -> None:  # noqa: ANN001
    for status, count in statuses.items():
        for _ in range(count):
            await pool.execute(
                "INSERT INTO outbox (message_id, destination, partition_key, payload, status, delivered_at) "
                "VALUES ($1, $2, 'sch-1', '\\x00', $3, CASE WHEN $3 = 'delivered' THEN now() END)",
                uuid.uuid4(), destination, status)


@asynccontextmanager
async def app_for(pool, probes, options: HealthOptions = HealthOptions()  # noqa: ANN001
                  ) -> AsyncIterator[httpx.AsyncClient]:
    """The operations routes, called by an operator."""
    gate = access_support.gate(pool)
    app = FastAPI()
    app.include_router(health_router(pool=pool, probes=probes, gate=gate, options=options))
    app.include_router(monitoring_router(pool=pool, gate=gate))
    operator = await access_support.token(pool, Kind.OPERATOR, f"ops-{uuid.uuid4().hex[:6]}")
    async with access_support.client(app, operator) as client:
        yield client


async def test_metrics_expose_every_series_and_outbox_rows_from_postgresql(db_pool) -> None:  # noqa: ANN001
    destination = f"dest-{uuid.uuid4().hex[:6]}"
    await add_outbox_rows(db_pool, destination, pending=2, dead=1, delivered=3)
    metrics.DELIVERIES.labels(destination, "delivered").inc()
    metrics.RELAY_DELIVERY_LATENCY.labels(destination).observe(0.3)
    async with app_for(db_pool, {}) as client:
        answer = await client.get("/metrics")
    text = answer.text
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    for name in ("ejx_events_ingested_total", "ejx_events_rejected_total", "ejx_envelopes_signed_total",
                 "ejx_deliveries_total", "ejx_outbox_rows", "ejx_consumer_lag",
                 "ejx_relay_delivery_latency_seconds_bucket"):
        assert f"# TYPE {name.removesuffix('_total').removesuffix('_bucket')}" in text, name
    assert f'ejx_outbox_rows{{destination="{destination}",status="pending"}} 2.0' in text
    assert f'ejx_outbox_rows{{destination="{destination}",status="dead"}} 1.0' in text
    assert f'ejx_deliveries_total{{destination="{destination}",outcome="delivered"}} 1.0' in text
    assert f'ejx_relay_delivery_latency_seconds_count{{destination="{destination}"}} 1.0' in text


async def test_pipeline_view_counts_outbox_rows_and_recent_deliveries(db_pool) -> None:  # noqa: ANN001
    destination = f"dest-{uuid.uuid4().hex[:6]}"
    await add_outbox_rows(db_pool, destination, pending=1, dead=2, delivered=6)
    async with app_for(db_pool, {}) as client:
        body = (await client.get("/v1/monitoring/pipeline")).json()
    [row] = [r for r in body["outbox"] if r["destination"] == destination]
    assert row == {"destination": destination, "pending": 1, "dead": 2, "delivered_recently": 6,
                   "delivered_per_minute": 0.1}  # 6 in the last 60 minutes
    assert set(body["consumer_lag"]) == {"router", "analytics"}


async def test_health_and_readiness(db_pool, kafka_bootstrap) -> None:  # noqa: ANN001
    ready = {"postgresql": postgres_probe(db_pool), "kafka": kafka_probe(kafka_bootstrap)}
    async with app_for(db_pool, ready) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        answer = await client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": {"postgresql": "ok", "kafka": "ok"}}


async def test_not_ready_when_kafka_does_not_answer(db_pool) -> None:  # noqa: ANN001
    probes = {"postgresql": postgres_probe(db_pool), "kafka": kafka_probe("127.0.0.1:1", timeout_s=1)}
    async with app_for(db_pool, probes) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unavailable" and body["checks"]["postgresql"] == "ok"
    assert body["checks"]["kafka"] != "ok"
    assert "127.0.0.1" not in answer.text and ":1" not in body["checks"]["kafka"]  # no host, no port


async def test_readiness_probes_once_for_any_number_of_callers_while_fresh(db_pool) -> None:  # noqa: ANN001
    """/readyz is open to anyone: a flood of calls must not become a flood of connections to Kafka and PostgreSQL.
    (A round stays fresh 2 s here, so a slow machine still fits the 51 calls in one.)"""
    import asyncio
    rounds = 0
    database = postgres_probe(db_pool)

    async def counted() -> None:
        nonlocal rounds
        rounds += 1
        await asyncio.sleep(0.05)
        await database()
    async with app_for(db_pool, {"postgresql": counted}, HealthOptions(fresh_s=2.0)) as client:
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
        again = await client.get("/readyz")
        assert rounds == 1
        await asyncio.sleep(2.1)
        later = await client.get("/readyz")
    assert {a.status_code for a in [*answers, again, later]} == {200}
    assert rounds == 2


async def test_events_the_router_dead_letters_are_counted_by_fault_code(pipeline) -> None:  # noqa: ANN001
    before = metric("ejx_events_rejected_total", code="InvalidContent")
    await pipeline.produce(b"<not-closed>", event_xml("ok-1"))

    async def routed_one() -> bool:
        return await pipeline.pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'router'") == 1
    await run_until(pipeline.router(), routed_one)  # returns once the batch in flight, DLQ included, is done
    assert metric("ejx_events_rejected_total", code="InvalidContent") - before == 1
