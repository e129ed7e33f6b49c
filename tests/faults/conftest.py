"""Fixtures of the fault tests: the fault proxy in front of the shared PostgreSQL, settings through it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from broker.settings import Settings
from tests.faultproxy import FaultProxy


def through(dsn: str, proxy: FaultProxy) -> str:
    """``dsn`` with its host and port replaced by the proxy's."""
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{proxy.address}"))


@pytest.fixture
async def pg_proxy(settings: Settings) -> AsyncIterator[FaultProxy]:
    """A fault proxy whose upstream is the PostgreSQL of the suite (never itself frozen or stopped)."""
    parts = urlsplit(settings.database_dsn)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def proxied_settings(db_settings: Settings, pg_proxy: FaultProxy) -> Settings:
    """The test's own database, reached through ``pg_proxy``."""
    return db_settings.model_copy(update={"database_url": through(db_settings.database_dsn, pg_proxy)})
