"""The whole HTTP face of ejx as ``ejx serve`` builds it (bootstrap.runtime), on real Kafka and PostgreSQL,
with one credential of every kind; and, for the tests that need sockets, the same app on a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from broker.access.credentials import Credentials, Kind
from broker.access.registry import Registry, School
from broker.app import bootstrap
from broker.settings import Settings

DISTRICT_A = "Центральный"
DISTRICT_B = "Северный"
SCHOOL_A = "sch-770001"
SCHOOL_B = "sch-880002"
VENDOR = "dnevnik-plus"


@dataclass(frozen=True)
class Faces:
    """The app and one token per kind (``authority_a`` is scoped to district A)."""

    app: FastAPI
    settings: Settings
    pool: asyncpg.Pool
    tokens: dict[str, str]

    def client(self, who: str | None = None, *, address: str = "127.0.0.1") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else None
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://ejx", headers=headers, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def face_settings(db_settings: Settings, fresh_topic: str) -> Settings:
    return db_settings.model_copy(update={
        "events_topic": fresh_topic, "dlq_topic": f"{fresh_topic}.dlq",
        "interagency_topic": f"{fresh_topic}.interagency", "http_port": free_port()})


async def register_everyone(pool: asyncpg.Pool) -> dict[str, str]:
    registry = Registry(pool)
    credentials = Credentials(pool)
    tokens = {"vendor": await registry.add_vendor(VENDOR)}
    await registry.import_schools([School(SCHOOL_A, "Школа № 1", DISTRICT_A, VENDOR),
                                   School(SCHOOL_B, "Школа № 2", DISTRICT_B, VENDOR)])
    tokens["portal_client"] = await credentials.add(Kind.PORTAL_CLIENT, "epgu")
    tokens["authority"] = await credentials.add(Kind.AUTHORITY, "ministry")
    tokens["authority_a"] = await credentials.add(Kind.AUTHORITY, "central-office", districts=(DISTRICT_A,))
    tokens["operator"] = await credentials.add(Kind.OPERATOR, "on-call")
    return tokens


@pytest.fixture
async def faces(face_settings: Settings, db_pool: asyncpg.Pool) -> AsyncIterator[Faces]:
    tokens = await register_everyone(db_pool)
    async with bootstrap.runtime(face_settings, ("ingest", "smev", "dashboard")) as built:
        assert built.app is not None
        yield Faces(built.app, face_settings, db_pool, tokens)


@contextlib.asynccontextmanager
async def serving(settings: Settings, app: FastAPI) -> AsyncIterator[str]:
    """``app`` on uvicorn exactly as ``ejx serve`` configures it; yields its base URL."""
    server = bootstrap.http_server(settings, app)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        server.should_exit = True
        await task
