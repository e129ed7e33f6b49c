"""Prometheus metrics every component records into, and the ``/metrics``, ``/healthz``, ``/readyz`` routes.

The metric objects live in one registry of ours (not the client's global
one), so a test or a second app in the same process sees exactly ejx's
series. Creating them connects to nothing; components import and record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from broker.access.credentials import Kind, Principal
from broker.access.gate import Gate
from broker.domain.faults import FAULTS, Failure
from broker.infra.http_server import CREDENTIAL_STATUSES, fault_responses, fault_router

log = structlog.get_logger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_INGESTED = Counter(
    "ejx_events_ingested", "Events accepted from vendors and produced to the events topic.",
    ["vendor", "event_type"], registry=REGISTRY)
EVENTS_REJECTED = Counter(
    "ejx_events_rejected", "Events refused at ingest or sent to the DLQ, by fault code.",
    ["code"], registry=REGISTRY)
ENVELOPES_SIGNED = Counter(
    "ejx_envelopes_signed", "Envelopes signed for delivery.", ["algorithm"], registry=REGISTRY)
DELIVERIES = Counter(
    "ejx_deliveries", "Relay delivery attempts by destination and outcome (delivered, duplicate, retry, dead).",
    ["destination", "outcome"], registry=REGISTRY)
OUTBOX_ROWS = Gauge(
    "ejx_outbox_rows", "Outbox rows by destination and status (pending, dead), read from PostgreSQL at scrape.",
    ["destination", "status"], registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "ejx_consumer_lag", "Messages between a consumer's position and the partition's high watermark.",
    ["consumer", "topic", "partition"], registry=REGISTRY)
RELAY_DELIVERY_LATENCY = Histogram(
    "ejx_relay_delivery_latency_seconds", "From the outbox row's creation to the receiver's acknowledgement.",
    ["destination"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600), registry=REGISTRY)
RELAY_STALLS = Counter(
    "ejx_relay_stalls", "Times the relay's watchdog found it stuck on the database longer than its lease "
    "and dropped its connections.", registry=REGISTRY)
RETENTION_DELETED = Counter(
    "ejx_retention_deleted_rows", "Rows the retention sweep deleted, by table.", ["table"], registry=REGISTRY)
ANALYTICS_EVENTS = Counter(
    "ejx_analytics_events", "Events seen by the analytics consumer (applied, duplicate, test).",
    ["event_type", "outcome"], registry=REGISTRY)
DIARY_READS = Counter(
    "ejx_diary_reads", "E-diary read requests by outcome (allowed, denied).", ["outcome"], registry=REGISTRY)
DIARY_REQUESTS = Counter(
    "ejx_diary_requests", "E-diary requests over SMEV 3 answered, by outcome (answered, NO_DATA, ACCESS_DENIED, "
    "FAILURE); TestMessages are not counted.", ["outcome"], registry=REGISTRY)


def event_rejected(code: str, count: int = 1) -> None:
    """Count events refused at ingest or dead-lettered, under their fault code.

    The label is only ever one of the SMEV-like codes (anything else counts as Failure), so no
    vendor input can become a series. An event both consumers dead-letter is counted by each.
    """
    EVENTS_REJECTED.labels(FAULTS.get(code, Failure).code).inc(count)


def consumer_lag(consumer: str) -> dict[str, int]:
    """Total lag per topic of one consumer, as last reported by it (the dashboard's view)."""
    totals: dict[str, int] = {}
    for metric in CONSUMER_LAG.collect():
        for sample in metric.samples:
            if sample.labels.get("consumer") == consumer:
                topic = sample.labels["topic"]
                totals[topic] = totals.get(topic, 0) + int(sample.value)
    return totals


async def refresh_outbox_rows(db: asyncpg.Pool) -> dict[tuple[str, str], int]:
    """Set ``ejx_outbox_rows`` from the outbox (pending and dead; delivered rows are swept)."""
    rows = await db.fetch(
        "SELECT destination, status, count(*) AS n FROM outbox WHERE status IN ('pending', 'dead') "
        "GROUP BY destination, status")
    counts = {(row["destination"], row["status"]): row["n"] for row in rows}
    for metric in OUTBOX_ROWS.collect():
        for sample in metric.samples:  # a destination drained since the last scrape drops to 0
            counts.setdefault((sample.labels["destination"], sample.labels["status"]), 0)
    for (destination, status), n in counts.items():
        OUTBOX_ROWS.labels(destination, status).set(n)
    return counts


Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class HealthOptions:
    """How long readiness waits for each dependency."""

    probe_timeout_s: float = 3.0
    """Seconds before an unanswered probe counts as unreachable."""
    fresh_s: float = 1.0
    """A readiness answer is reused this long after its probes started: anyone may ask, as often as they
    like, and each round opens a Kafka connection and takes a PostgreSQL one."""


def postgres_probe(pool: asyncpg.Pool) -> Probe:
    async def probe() -> None:
        await pool.fetchval("SELECT 1")
    return probe


def kafka_probe(bootstrap_servers: str, *, timeout_s: float = 3.0) -> Probe:
    """Reachable means the cluster answers a metadata request."""
    from broker.infra import kafka

    async def probe() -> None:
        await kafka.wait_ready(bootstrap_servers, timeout=timeout_s)
    return probe


def health_router(*, pool: asyncpg.Pool | None, probes: dict[str, Probe], gate: Gate,
                  options: HealthOptions = HealthOptions()) -> APIRouter:
    """``/metrics`` for operators (refreshing outbox gauges from ``pool`` if given); ``/healthz``
    and ``/readyz`` for anyone, saying which dependency is down but never where it lives.

    ``probes`` names each dependency readiness needs, e.g.
    ``{"postgresql": postgres_probe(pool), "kafka": kafka_probe(settings.kafka_address)}``.
    """
    router = fault_router(tags=["operations"])
    operator = gate.require(Kind.OPERATOR)

    @router.get("/metrics", summary="Prometheus metrics (operators)", responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}}, **fault_responses(*CREDENTIAL_STATUSES)})
    async def metrics(principal: Principal = Depends(operator)) -> Response:
        if pool is not None:
            try:
                await asyncio.wait_for(refresh_outbox_rows(pool), options.probe_timeout_s)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as error:
                # The scrape still answers; ejx_outbox_rows keeps its last values and /readyz says why.
                log.warning("metrics.outbox_unreadable", reason=type(error).__name__)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def check_all() -> dict[str, str]:
        names = list(probes)
        results = await asyncio.gather(*(_check(probes[n], options.probe_timeout_s) for n in names))
        return dict(zip(names, results, strict=True))
    readiness = _Shared(check_all, fresh_s=options.fresh_s)

    @router.get("/readyz", summary="Kafka and PostgreSQL are reachable")
    async def readyz() -> JSONResponse:
        checks = await readiness()
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                            status_code=200 if ready else 503)

    return router


class _Shared:
    """One round of ``run`` for every caller while it runs and for ``fresh_s`` after it started."""

    def __init__(self, run: Callable[[], Awaitable[dict[str, str]]], *, fresh_s: float) -> None:
        self._run, self._fresh_s = run, fresh_s
        self._round: asyncio.Future[dict[str, str]] | None = None
        self._started = 0.0

    async def __call__(self) -> dict[str, str]:
        now = time.monotonic()
        if self._round is None or (self._round.done() and now - self._started >= self._fresh_s):
            self._round, self._started = asyncio.ensure_future(self._run()), now
        return await asyncio.shield(self._round)  # a caller that goes away leaves the round to the others


async def _check(probe: Probe, timeout: float) -> str:
    """"ok" or why not; any failure of a dependency is an answer here, not an error of ours.

    The answer is public, so it names the kind of failure only: an error's text
    may carry a host, a port or a DSN. The log (for operators) has the same.
    """
    try:
        await asyncio.wait_for(probe(), timeout)
    except asyncio.TimeoutError:
        return f"no answer within {timeout:g}s"
    except Exception as error:  # noqa: BLE001 - readiness reports every failure mode of a dependency
        log.warning("readyz.dependency_down", reason=type(error).__name__)
        return f"unavailable ({type(error).__name__})"
    return "ok"
