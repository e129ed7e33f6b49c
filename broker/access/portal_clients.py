"""Who read a child's e-diary: the access log written with every diary read.

Vendors write journals; they never read diaries through ejx. A portal client
(e.g. the public-services portal) is a credential of kind portal client
(``ejx portal-clients add``); every allowed read is logged in the same
transaction as the read itself, so no diary leaves without a trace.
"""

from __future__ import annotations

from datetime import date

import asyncpg


async def record_read(conn: asyncpg.Connection, *, client_id: str, student_id: str,
                      date_from: date | None, date_to: date | None) -> None:
    """One line of the access log: who read whose diary, when, for which days."""
    await conn.execute(
        "INSERT INTO diary_access_log (client_id, student_id, date_from, date_to) VALUES ($1, $2, $3, $4)",
        client_id, student_id, date_from, date_to)
