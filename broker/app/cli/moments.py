"""Times on the command line: one parser for every ``--at``/``--since``/``--until``, one way to show them.

People read times in Moscow time unless they ask otherwise, and a time typed without
a zone is Moscow time, in every command.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import click

MOSCOW = ZoneInfo("Europe/Moscow")


def parse_moment(value: str | None) -> datetime | None:
    """ISO 8601 (e.g. 2026-10-14T09:41:00+03:00); without a zone, Moscow time; None stays None."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-10-14T09:41:00+03:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=MOSCOW)


def shown(moment: datetime) -> str:
    """A moment as people read it here: Moscow time, to the second."""
    return f"{moment.astimezone(MOSCOW):%Y-%m-%d %H:%M:%S} MSK"
