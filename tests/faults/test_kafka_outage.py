"""Kafka unreachable for 60 s under ``ejx serve --components ingest,router``: ingest answers 503 with
Retry-After within its publish timeout (never 500, never a hang), the router resumes on its own
afterwards, and every accepted event is routed exactly once.

The broker is the test's own (ports 32000-32999) and advertises a fault proxy's address, so every
connection of ejx, bootstrap or not, goes through the proxy; the broker itself is never touched.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from adapters import examples
from adapters.publisher import PublisherOptions
from broker.settings import Settings
from tests.delivery_support import eventually
from tests.faultproxy import FaultProxy
from tests.faults.serve_support import Served, environment
from tests.integration.ingest_support import SCHOOL, bearer, register

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.own_kafka]

OUTAGE_S = 60.0
"""As the issue says: Kafka unreachable for a minute."""
PUBLISH_TIMEOUT_S = PublisherOptions().timeout_s


def grades(prefix: str, count: int = 5) -> list[dict]:
    return [{**examples.EVENTS["GradePosted"], "source_record_id": f"{prefix}-{n}", "school_id": SCHOOL}
            for n in range(count)]


async def test_kafka_unreachable_for_a_minute_is_503_then_everything_is_routed_once(
        outage_settings: Settings, proxied_kafka: FaultProxy, db_pool) -> None:  # noqa: ANN001
    tokens = await register(db_pool)
    served = Served(["--components", "ingest,router"], environment(outage_settings))
    accepted: set[str] = set()
    refused: list[tuple[list[dict], float]] = []
    try:
        await served.wait_for("router.started")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{outage_settings.http_port}",
                                     headers=bearer(tokens.vendor), timeout=PUBLISH_TIMEOUT_S * 3) as client:
            async def post(batch: list[dict]) -> httpx.Response:
                answer = await client.post("/v1/events", json=batch)
                if answer.status_code == 202:
                    accepted.update(answer.json()["event_ids"])
                return answer

            await eventually(lambda: _accepted(post, grades("before")), timeout=60)
            await eventually(lambda: _routed(db_pool, accepted), timeout=60)
            assert (await post(grades("just-before"))).status_code == 202

            async with proxied_kafka.unreachable():
                cut = time.monotonic()
                n = 0
                while time.monotonic() - cut < OUTAGE_S - PUBLISH_TIMEOUT_S - 5:
                    batch, asked = grades(f"during-{n}"), time.monotonic()
                    answer = await post(batch)
                    took = time.monotonic() - asked
                    assert answer.status_code == 503, answer.text
                    assert int(answer.headers["Retry-After"]) > 0 and answer.json()["code"] == "Failure"
                    assert took < PUBLISH_TIMEOUT_S + 5, took
                    refused.append((batch, took))
                    n += 1
                    await asyncio.sleep(1)  # a vendor pauses (Retry-After says longer)
                await asyncio.sleep(OUTAGE_S - (time.monotonic() - cut))
            back = time.monotonic()

            # The vendor retries what was refused, same body: the first retry shows when ingest is back.
            await eventually(lambda: _accepted(post, refused[0][0]), timeout=90, every=1)
            resumed = time.monotonic() - back
            for batch, _ in refused[1:]:
                await eventually(lambda batch=batch: _accepted(post, batch), timeout=60, every=1)
            await eventually(lambda: _accepted(post, grades("after")), timeout=60)
            await eventually(lambda: _routed(db_pool, accepted), timeout=120, every=0.5)
            routed_in = time.monotonic() - back
        assert served.process.poll() is None, served.tail()
        assert len(served.events("serve.started")) == 1
        # A grade has one envelope, for the portal: an event routed twice would be a second row.
        assert await db_pool.fetchval("SELECT count(*) FROM outbox") == len(accepted) == 5 * (3 + len(refused))
        code, _ = await served.terminate(within=30)
    finally:
        served.kill()
    assert code == 0, served.tail()
    took = sorted(took for _, took in refused)
    print(f"\nKafka unreachable {OUTAGE_S:g} s: {len(refused)} requests answered 503 in "
          f"{took[0]:.1f}-{took[-1]:.1f} s; the first retry accepted {resumed:.1f} s and all {len(accepted)} "
          f"events routed {routed_in:.1f} s after Kafka was back")


async def _accepted(post, batch: list[dict]) -> bool:  # noqa: ANN001
    answer = await post(batch)
    assert answer.status_code in (202, 503), answer.text
    return answer.status_code == 202


async def _routed(pool, event_ids: set[str]) -> bool:  # noqa: ANN001
    rows = await pool.fetch("SELECT event_id::text FROM inbox WHERE consumer = 'router'")
    return event_ids <= {row["event_id"] for row in rows}
