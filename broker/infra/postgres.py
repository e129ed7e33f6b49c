"""PostgreSQL: the connection pool, the unit of work, and THE one outage classification.

The unit of work is the only way to write durably: business rows and outbox rows
commit together or not at all. Whether an error means "PostgreSQL is unavailable
now, try again" or "a bug, stop" is decided by :func:`is_outage` alone; every
caller converts with :func:`outage_as_failure`, so they can never disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from broker.domain.faults import Failure
from broker.settings import Settings

log = structlog.get_logger(__name__)

_OUTAGES = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError, asyncpg.AdminShutdownError,
            asyncpg.SerializationError, asyncpg.DeadlockDetectedError, asyncpg.QueryCanceledError,
            asyncpg.exceptions.InternalClientError)
"""QueryCanceledError: a statement timeout (a frozen or overloaded server). InternalClientError:
what asyncpg raises on a pooled connection whose server died ("cannot switch to state …")."""


def is_outage(error: BaseException) -> bool:
    """True when ``error`` means PostgreSQL cannot answer now (worth waiting out); any other
    PostgresError — bad SQL, a missing migration, a constraint — is a bug the caller must not retry."""
    return isinstance(error, _OUTAGES)


@contextmanager
def outage_as_failure(what: str = "PostgreSQL") -> Iterator[None]:
    """Turn an outage inside the block into a retriable :class:`Failure` (503, retry); the
    description names no host, so it is safe to show any caller."""
    try:
        yield
    except Failure:
        raise
    except Exception as error:
        if not is_outage(error):
            raise
        raise Failure(f"{what} is unavailable ({type(error).__name__}); try again later") from error


def masked_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``: the only form ejx ever prints or logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def connect(settings: Settings, *, timeout: float = 30) -> asyncpg.Connection:
    """One connection (migrations, admin work); unreachable is a Failure naming the masked DSN."""
    try:
        return await asyncpg.connect(settings.database_dsn, timeout=timeout)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as error:
        raise Failure(f"PostgreSQL at {masked_dsn(settings.database_dsn)} is unreachable: "
                      f"{type(error).__name__}") from error


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool on the configured database; connection failures become a retriable Failure."""
    try:
        return await asyncpg.create_pool(settings.database_dsn, min_size=min_size, max_size=max_size, timeout=30)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as error:
        raise Failure(f"PostgreSQL at {masked_dsn(settings.database_dsn)} is unreachable: "
                      f"{type(error).__name__}") from error


@asynccontextmanager
async def connected(settings: Settings, *, max_size: int = 10) -> AsyncIterator[asyncpg.Pool]:
    """A pool for the length of one command or component; closed on exit."""
    pool = await create_pool(settings, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


class UnitOfWork:
    """``async with UnitOfWork(pool) as uow:`` — rolls back unless ``await uow.commit()`` was called."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._committed = False

    async def __aenter__(self) -> UnitOfWork:
        self.connection: asyncpg.Connection = await self._pool.acquire()
        self._transaction = self.connection.transaction()
        try:
            await self._transaction.start()
        except BaseException:
            await self._pool.release(self.connection)
            raise
        return self

    async def commit(self) -> None:
        await self._transaction.commit()
        self._committed = True

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if not self._committed:
                await self._transaction.rollback()
        except BaseException as error:
            if exc is None or not is_outage(error):
                raise
            # The connection died under the block's own error: that error is the one to report.
        finally:
            await self._pool.release(self.connection)
