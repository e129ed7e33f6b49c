"""Credentials for tests: one token of each kind on a test database, and clients carrying them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
from fastapi import FastAPI

from broker.access.credentials import Credentials, Kind
from broker.access.gate import Gate, GateOptions


async def token(pool: asyncpg.Pool, kind: Kind, name: str, *, districts: tuple[str, ...] = ()) -> str:
    """A new credential of ``kind`` (vendors: use Registry.add_vendor, which also registers the vendor)."""
    return await Credentials(pool).add(kind, name, districts=districts)


def gate(pool: asyncpg.Pool, options: GateOptions = GateOptions()) -> Gate:
    return Gate(Credentials(pool), options)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@asynccontextmanager
async def client(app: FastAPI, secret: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of ``app``, sending ``secret`` as its bearer token if given."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ejx",
                                 headers=bearer(secret) if secret else None, timeout=60) as found:
        yield found
