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


def rows_affected(status: str) -> int:
    """The row count of a command's status line, e.g. 3 for "UPDATE 3" or "DELETE 3"."""
    return int(status.rpartition(" ")[2])


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


DEAD_CLIENT_SETTINGS = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3",
                        "tcp_user_timeout": "60000"}
"""How the server finds a client gone without a close (host died, network cut) within about a minute:
keepalive probes after 30 s of silence, 3 unanswered 10 s apart; or its own data unacknowledged for 60 s.
A backend waiting on such a client mid-statement (active/ClientRead) escapes both timeouts below and
would hold its locks until the kernel's two-hour default."""


PLANNING_SETTINGS = {"plan_cache_mode": "force_custom_plan", "jit": "off"}
"""Plan every execution for the table as it is now, and never JIT-compile it.

asyncpg prepares each statement once per connection, and after five runs PostgreSQL may keep a generic
plan made while the outbox was nearly empty: with a backlog of 9,000 rows that plan made each claim take
over a second of CPU (the relay's claim at 100 % of a core, 174 events/s); planned afresh the same claim
takes 1-4 ms. Planning costs ~0.3 ms a statement.

A plan estimated above ``jit_above_cost`` is compiled to machine code on every execution. The claim over
a backlog of 10,000 rows is estimated at ~125,000, so each claim spent ~11 ms compiling to run for 3 ms:
two thirds of PostgreSQL's CPU in a pipeline run. ejx's statements are short; none gains from JIT."""


def _server_settings(settings: Settings, *, maintenance: bool) -> dict[str, str]:
    """Limits the server enforces on each session: a statement, a transaction left idle, a dead client;
    and fresh plans (:data:`PLANNING_SETTINGS`)."""
    statement_s = settings.db_maintenance_timeout_s if maintenance else settings.db_statement_timeout_s
    return {**PLANNING_SETTINGS, "statement_timeout": str(int(statement_s * 1000)),
            "idle_in_transaction_session_timeout": str(int(settings.db_idle_in_transaction_timeout_s * 1000)),
            **DEAD_CLIENT_SETTINGS}


def _command_timeout(settings: Settings, *, maintenance: bool) -> float:
    """The client's own limit on a call: what ends a wait on a server that cannot even cancel."""
    if maintenance:
        return settings.db_maintenance_timeout_s + settings.db_command_timeout_s
    return settings.db_command_timeout_s


def _unreachable(settings: Settings, error: BaseException) -> Failure:
    """A server that answered and refused (a wrong role or password, a missing database) is named as such, with
    its reason: on-call checks the credentials, not the network. The server's reason never holds the password."""
    where = f"PostgreSQL at {masked_dsn(settings.database_dsn)}"
    if isinstance(error, asyncpg.PostgresError):
        return Failure(f"{where} refused the connection: {error}")
    return Failure(f"{where} is unreachable: {type(error).__name__}")


async def connect(settings: Settings, *, maintenance: bool = True) -> asyncpg.Connection:
    """One connection for admin work (migrations by default: ``maintenance`` limits); unreachable is a
    Failure naming the masked DSN."""
    try:
        return await asyncpg.connect(settings.database_dsn, timeout=settings.db_connect_timeout_s,
                                     command_timeout=_command_timeout(settings, maintenance=maintenance),
                                     server_settings=_server_settings(settings, maintenance=maintenance))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as error:
        raise _unreachable(settings, error) from error


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """What a released connection needs beyond asyncpg's own rollback of an open transaction: nothing.

    ejx keeps no session state on pooled connections: settings come in the startup packet, advisory
    locks are transaction-scoped or unlocked in a ``finally`` (a connection whose unlock failed is
    terminated), the relay's listening connection is terminated rather than released, and no cursor
    outlives its transaction. asyncpg's default reset (advisory unlock, CLOSE ALL, UNLISTEN *, RESET ALL)
    is one more round trip per release: acquire + query + release took 0.48-0.52 ms with it, 0.22-0.24 ms
    without, and PostgreSQL's CPU per cycle 128-138 µs against 44-50 µs.
    """


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10,
                      maintenance: bool = False) -> asyncpg.Pool:
    """A pool on the configured database where every call is bounded: the server cancels a statement
    after the statement timeout, the client gives up after the command timeout (``maintenance``: the
    long limits of archives and pruning). Connection failures become a retriable Failure."""
    try:
        return await asyncpg.create_pool(
            settings.database_dsn, min_size=min_size, max_size=max_size, timeout=settings.db_connect_timeout_s,
            reset=_no_session_state,
            command_timeout=_command_timeout(settings, maintenance=maintenance),
            server_settings=_server_settings(settings, maintenance=maintenance))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as error:
        raise _unreachable(settings, error) from error


@asynccontextmanager
async def session_lock(conn: asyncpg.Connection, key: int, *, wait: bool = True) -> AsyncIterator[bool]:
    """A session-level advisory lock for the block: True once held, or False at once when ``wait`` is off
    and another session holds it. The unlock runs on every way out, and a connection whose unlock failed
    is terminated, so a lock never goes back into a pool (pools keep no session state: see
    :func:`_no_session_state`)."""
    if wait:
        await conn.execute("SELECT pg_advisory_lock($1)", key)
    elif not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
        yield False
        return
    try:
        yield True
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
        except BaseException:
            conn.terminate()
            raise


async def close_pool(pool: asyncpg.Pool, *, timeout: float) -> None:
    """Close gracefully within ``timeout``, else drop every connection: a frozen server must not hold
    a stopping process (PostgreSQL rolls back what the dropped sessions left open)."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except (asyncio.TimeoutError, *_OUTAGES):
        log.warning("postgres.pool_terminated", reason="graceful close took too long", timeout_s=timeout)
        pool.terminate()


@asynccontextmanager
async def connected(settings: Settings, *, max_size: int = 10, maintenance: bool = False
                    ) -> AsyncIterator[asyncpg.Pool]:
    """A pool for the length of one command or component; closed on exit."""
    pool = await create_pool(settings, max_size=max_size, maintenance=maintenance)
    try:
        yield pool
    finally:
        await close_pool(pool, timeout=settings.db_command_timeout_s)


async def ping(settings: Settings) -> None:
    """Connect and ``SELECT 1`` within the connect timeout; a Failure when PostgreSQL cannot answer."""
    try:
        conn = await asyncpg.connect(settings.database_dsn, timeout=settings.db_connect_timeout_s,
                                     command_timeout=settings.db_connect_timeout_s)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            conn.terminate()
    except Exception as error:
        if not is_outage(error):
            raise  # a wrong password or a missing database: waiting would not help
        raise _unreachable(settings, error) from error


ACQUIRE_TIMEOUT_S = 30.0
"""A unit of work's wait for a free connection, and for its connection's release after a failed call
(asyncpg waits that long for a cancelled statement to be confirmed, then drops the connection)."""


class UnitOfWork:
    """``async with UnitOfWork(pool) as uow:`` — rolls back unless ``await uow.commit()`` was called."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._committed = False

    async def __aenter__(self) -> UnitOfWork:
        self.connection: asyncpg.Connection = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
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
