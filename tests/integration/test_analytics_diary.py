"""The e-diary answers portal clients only, and every read it serves is in the access log."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from broker.access.credentials import Credentials, Kind
from broker.access.registry import Registry
from broker.analytics.api import monitoring_router
from broker.xml.schemas import Schemas
from consumers.analytics import AnalyticsConsumer
from tests import access_support
from tests.fixtures.analytics.journal import AS_OF, JOURNAL, register
from tests.integration.test_analytics_projections import ANNA_GRADES, grades_of, record


async def journal_with_clients(settings, pool) -> tuple[str, str]:  # noqa: ANN001
    """The journal applied; a portal client's token and a vendor's token."""
    await register(pool)
    consumer = AnalyticsConsumer(settings=settings, pool=pool, schemas=Schemas.load())
    for offset, delivery in enumerate(JOURNAL):
        await consumer.handle(record(delivery, offset))
    return (await access_support.token(pool, Kind.PORTAL_CLIENT, "epgu"),
            await Registry(pool).add_vendor("vendor-with-token"))


def client_for(pool) -> httpx.AsyncClient:  # noqa: ANN001
    app = FastAPI()
    app.include_router(monitoring_router(pool=pool, gate=access_support.gate(pool), clock=lambda: AS_OF))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ejx")


async def access_log(pool) -> list[tuple]:  # noqa: ANN001
    rows = await pool.fetch("SELECT client_id, student_id, date_from::text, date_to::text FROM diary_access_log "
                            "ORDER BY id")
    return [tuple(row) for row in rows]


async def test_a_vendor_token_is_refused_and_nothing_is_logged(db_settings, db_pool) -> None:  # noqa: ANN001
    _, vendor_token = await journal_with_clients(db_settings, db_pool)
    async with client_for(db_pool) as client:
        answer = await client.get("/v1/diary/st-anna1", headers={"Authorization": f"Bearer {vendor_token}"})
    assert answer.status_code == 403
    assert answer.json()["code"] == "AccessDenied"
    assert "st-anna1" not in answer.text and "grades" not in answer.json()
    assert await access_log(db_pool) == []


async def test_missing_or_unknown_tokens_are_not_registered(db_settings, db_pool) -> None:  # noqa: ANN001
    await journal_with_clients(db_settings, db_pool)
    async with client_for(db_pool) as client:
        for headers in ({}, {"Authorization": "Bearer ejx_not-a-token"}, {"Authorization": "Basic ZXB"}):
            answer = await client.get("/v1/diary/st-anna1", headers=headers)
            assert answer.status_code == 401, headers
            assert answer.json()["code"] == "SenderIsNotRegistered"
            assert answer.headers["www-authenticate"] == "Bearer"
    assert await access_log(db_pool) == []


async def test_every_allowed_read_is_logged_with_who_whom_and_when(db_settings, db_pool) -> None:  # noqa: ANN001
    portal_token, _ = await journal_with_clients(db_settings, db_pool)
    auth = {"Authorization": f"Bearer {portal_token}"}
    async with client_for(db_pool) as client:
        full = await client.get("/v1/diary/st-anna1", headers=auth)
        week = await client.get("/v1/diary/st-anna1", params={"from": "2026-03-05", "to": "2026-03-08"},
                                headers=auth)
        nobody = await client.get("/v1/diary/st-nobody9", headers=auth)
        backwards = await client.get("/v1/diary/st-anna1", params={"from": "2026-03-08", "to": "2026-03-05"},
                                     headers=auth)
    assert full.status_code == week.status_code == nobody.status_code == 200
    assert grades_of(full.json()) == ANNA_GRADES
    assert [g["grade_id"] for g in week.json()["grades"]] == ["g6", "g5"]
    assert nobody.json()["grades"] == [] and nobody.json()["attendance"] == []
    assert backwards.status_code == 400  # refused, so not a read
    assert await access_log(db_pool) == [
        ("epgu", "st-anna1", None, None),
        ("epgu", "st-anna1", "2026-03-05", "2026-03-08"),
        ("epgu", "st-nobody9", None, None),
    ]
    moments = await db_pool.fetch("SELECT read_at FROM diary_access_log ORDER BY id")
    assert all(m["read_at"] is not None for m in moments)


async def test_a_revoked_portal_client_is_refused(db_settings, db_pool) -> None:  # noqa: ANN001
    portal_token, _ = await journal_with_clients(db_settings, db_pool)
    await Credentials(db_pool).revoke(Kind.PORTAL_CLIENT, "epgu")
    async with client_for(db_pool) as client:
        answer = await client.get("/v1/diary/st-anna1", headers={"Authorization": f"Bearer {portal_token}"})
    assert answer.status_code == 401
    assert await access_log(db_pool) == []
