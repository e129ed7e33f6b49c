"""Replay of nothing ends at once (issue 14: `--from-offset 0 --dry-run` on an empty topic hung)."""

from __future__ import annotations

import asyncio
import time

import pytest

from broker.domain.faults import InvalidContent
from consumers.replay import ReplayRange, replay
from tests.integration.router_support import pair, pipeline, schemas  # noqa: F401  (fixtures)

PROMPT_S = 5.0
"""Far more than an empty replay needs (milliseconds), far less than the hang it guards against."""


async def _timed_replay(pipeline, selection: ReplayRange):
    started = time.monotonic()
    report = await asyncio.wait_for(replay(pipeline.settings, pipeline.router(), selection, dry_run=True),
                                    timeout=PROMPT_S)
    return report, time.monotonic() - started


async def test_dry_run_replay_of_an_empty_topic_from_offset_zero_ends_at_once(pipeline):
    report, seconds = await _timed_replay(pipeline, ReplayRange(topic=pipeline.settings.events_topic,
                                                                from_offset=0))
    assert report.records == 0 and set(report.partitions.values()) == {(0, 0)}
    assert seconds < PROMPT_S



async def test_replay_of_a_topic_that_does_not_exist_says_so_at_once(pipeline):
    """A mistyped --topic is InvalidContent at once, not a 30 s wait ending in "Kafka is unreachable"."""
    selection = ReplayRange(topic=f"{pipeline.settings.events_topic}.mistyped", from_offset=0)
    with pytest.raises(InvalidContent, match="does not exist"):
        await _timed_replay(pipeline, selection)
