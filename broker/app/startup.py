"""Start-up: wait for PostgreSQL and Kafka instead of crash-looping while either is down.

A component restarted by its supervisor during an outage would otherwise exit
at once, again and again, until the dependency returned. Waiting here, with
backoff and one log line per try, makes the restart quiet and the recovery
immediate; ``--fail-fast`` (``EJX_STARTUP_FAIL_FAST``) keeps the old behaviour
for supervisors that prefer to see the exit. A dependency can also go away just
after it answered, while the clients start: :func:`until_started` waits that
out the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from broker.domain.faults import Failure
from broker.infra import kafka, postgres
from broker.infra.backoff import Backoff, pause
from broker.settings import Settings

log = structlog.get_logger(__name__)

Started = TypeVar("Started")

PROBE_TIMEOUT_S = 5.0
"""One Kafka probe's wait: short, so each try is logged and SIGTERM is never kept waiting long."""


def _checks(settings: Settings) -> dict[str, Callable[[], Awaitable[None]]]:
    """One probe per dependency, each bounded by its own timeout."""
    return {
        "postgresql": lambda: postgres.ping(settings),
        "kafka": lambda: kafka.wait_ready(settings.kafka_address, timeout=PROBE_TIMEOUT_S),
    }


async def wait_for_dependencies(settings: Settings, *, stop: asyncio.Event) -> bool:
    """Return True once every dependency answered, False if ``stop`` came first.

    With ``settings.startup_fail_fast`` the first unanswered probe raises its Failure.
    """
    for dependency, check in _checks(settings).items():
        answered, _, attempts = await _retried(settings, check, stop=stop, event="startup.waiting",
                                               dependency=dependency)
        if not answered:
            return False
        if attempts > 1:
            log.info("startup.dependency_ready", dependency=dependency, attempts=attempts)
    return True


async def until_started(settings: Settings, start: Callable[[], Awaitable[Started]], *, stop: asyncio.Event,
                        what: str) -> Started | None:
    """``start()``'s result, tried again with backoff while it fails with a Failure (Kafka or PostgreSQL
    gone since they answered); None if ``stop`` came first.

    With ``settings.startup_fail_fast`` the first Failure is raised.
    """
    _, started, _ = await _retried(settings, start, stop=stop, event="startup.retrying", component=what)
    return started


async def _retried(settings: Settings, call: Callable[[], Awaitable[Started]], *, stop: asyncio.Event,
                   event: str, **context: str) -> tuple[bool, Started | None, int]:
    """(True, ``call()``'s result, tries) once it succeeds; (False, None, tries) if ``stop`` came first.
    Each Failure is logged as ``event`` and waited out with backoff, unless start-up fails fast."""
    backoff = Backoff(base_s=0.5, cap_s=settings.startup_retry_cap_s)
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            return True, await call(), attempt
        except Failure as failure:
            if settings.startup_fail_fast:
                raise
            delay = backoff.delay(attempt)
            log.warning(event, **context, attempt=attempt, retry_in_s=round(delay, 2), error=failure.description)
            await pause(stop, delay)
    return False, None, attempt
