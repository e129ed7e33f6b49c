"""Analytics projections: school activity, grade statistics and the e-diary, in PostgreSQL.

:func:`apply` writes a batch of canonical events into every projection they
touch, on the caller's connection and inside the caller's transaction (the
analytics consumer's unit of work, together with the batch's inbox rows). The
result is that of applying the events one by one in the order given.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from broker.analytics.projections import diary, school_activity
from broker.domain import model
from broker.domain.faults import UnknownMessageType


def check(event: model.Event) -> None:
    """Refuse an event no projection knows, before anything is written (UnknownMessageType)."""
    if not diary.handles(event):
        raise UnknownMessageType(f"analytics has no projection for {type(event).__name__}")


async def apply(conn: asyncpg.Connection, events: Sequence[model.Event]) -> None:
    """Count each event for its school and update the projection of its type; a few round trips per batch."""
    for event in events:
        check(event)
    await school_activity.record_events(conn, events)
    await diary.apply_events(conn, events)
