"""Who read a child's e-diary: one audit record per read, whichever face served it.

A portal client reading ``GET /v1/diary/{student_id}`` and an SMEV 3 participant
answered a DiaryRequest leave the same kind of record in the same table: who
(portal client name or participant mnemonic), whose diary, which days and subject,
when, and the outcome. It is written in the transaction that reads the diary, so no
diary leaves without a trace; a TestMessage's read is recorded as a test, never as a
real one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import asyncpg


class Channel(StrEnum):
    """The face a diary was read through."""

    API = "api"
    """``GET /v1/diary/{student_id}``, by a portal client's token."""
    SMEV3 = "smev3"
    """A DiaryRequest over SMEV 3, by a participant's signature."""


@dataclass(frozen=True)
class DiaryRead:
    """One audit record."""

    channel: Channel
    reader: str
    """The portal client's name, or the participant's mnemonic."""
    student_id: str
    date_from: date | None
    date_to: date | None
    outcome: str
    """answered, or the rejection's code (NO_DATA, ACCESS_DENIED, FAILURE)."""
    subject_code: str | None = None
    test: bool = False
    message_id: uuid.UUID | None = None
    """The SMEV 3 request's MessageID."""


async def record(conn: asyncpg.Connection, read: DiaryRead) -> None:
    """Write the audit record on the reader's own transaction."""
    await conn.execute(
        """INSERT INTO diary_access_log (channel, client_id, student_id, date_from, date_to, subject_code, outcome,
                                         test, message_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        read.channel.value, read.reader, read.student_id, read.date_from, read.date_to, read.subject_code,
        read.outcome, read.test, read.message_id)
