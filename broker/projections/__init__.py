"""Analytics projections: school activity, grade statistics and the e-diary, in PostgreSQL.

:func:`apply` writes one canonical event into every projection it touches,
on the caller's connection and inside the caller's transaction (the analytics
consumer's unit of work, together with its inbox row).
"""

from __future__ import annotations

import asyncpg

from broker import model
from broker.faults import UnknownMessageType
from broker.projections import diary, school_activity


async def apply(conn: asyncpg.Connection, event: model.Event) -> None:
    """Count the event for its school and update the projection of its type."""
    await school_activity.record_event(conn, school_id=event.school_id, vendor_id=event.source_system,
                                       recorded_at=event.recorded_at)
    match event:
        case model.GradePosted():
            await diary.apply_grade_posted(conn, event)
        case model.GradeCorrected() | model.GradeRetracted():
            await diary.apply_grade_changed(conn, event)
        case model.AttendanceMarked():
            await diary.apply_attendance(conn, event)
        case model.HomeworkAssigned():
            await diary.apply_homework(conn, event)
        case model.TermGradeFinalized():
            await diary.apply_term_grade(conn, event)
        case _:
            raise UnknownMessageType(f"analytics has no projection for {type(event).__name__}")
