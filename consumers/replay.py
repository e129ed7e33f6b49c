"""Replay: re-feed a stretch of the events topic through the router.

Replay reads by assignment (no consumer group, nothing committed), from a time
or an offset up to a time or the end the topic had when the replay started,
and hands each batch to :meth:`consumers.router.Router.process`. The inbox
makes a plain replay deliver nothing twice; ``redeliver`` gives events already
routed new envelopes whose ReferenceMessageID is their first MessageID, for
receivers that lost data. Rejected events are counted, not sent to the DLQ
again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from broker.domain.faults import Failure, InvalidContent
from broker.infra import kafka
from broker.settings import Settings
from consumers.router import BatchOutcome, Router

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReplayRange:
    """Which records to replay; exactly one of ``from_time`` and ``from_offset``."""

    topic: str
    from_time: datetime | None = None
    """First record with a timestamp at or after this."""
    from_offset: int | None = None
    """First offset, in every selected partition."""
    to_time: datetime | None = None
    """Stop before the first record at or after this; default: the end when the replay started."""
    partition: int | None = None
    """Only this partition; default: all."""

    def __post_init__(self) -> None:
        if (self.from_time is None) == (self.from_offset is None):
            raise InvalidContent("replay needs exactly one of from_time and from_offset")
        if self.from_offset is not None and self.from_offset < 0:
            raise InvalidContent("from_offset must not be negative")
        for moment in (self.from_time, self.to_time):
            if moment is not None and moment.tzinfo is None:
                raise InvalidContent("replay times need an explicit time zone")


@dataclass
class ReplayReport:
    """What a replay read and what the router made of it."""

    records: int = 0
    total: BatchOutcome = field(default_factory=BatchOutcome)
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Partition → [start, end) offsets replayed."""


async def replay(settings: Settings, router: Router, selection: ReplayRange, *, redeliver: bool = False,
                 dry_run: bool = False, batch_size: int = 500,
                 on_start: Callable[[int], None] | None = None,
                 on_progress: Callable[[int], None] | None = None) -> ReplayReport:
    """Replay ``selection``; ``on_start(total_records)`` then ``on_progress(n)`` per batch (progress bars)."""
    if not await kafka.topic_exists(settings, selection.topic):
        raise InvalidContent(f"topic {selection.topic} does not exist")
    # Subscribed at start only so that the client fetches the topic's metadata; reading is by assignment.
    consumer = kafka.consumer(settings, selection.topic, group_id=None, max_poll_records=batch_size)
    report = ReplayReport()
    async with kafka.running(consumer):
        bounds = await _bounds(consumer, selection)
        report.partitions = {tp.partition: bound for tp, bound in bounds.items()}
        live = {tp: end for tp, (start, end) in bounds.items() if start < end}
        if on_start:
            on_start(sum(end - start for start, end in bounds.values()))
        log.info("replay.started", topic=selection.topic, partitions=report.partitions, redeliver=redeliver,
                 dry_run=dry_run)
        if live:
            # Only with something to read: aiokafka's stop() never returns once a group-less
            # consumer has been unsubscribed and left without an assignment (an empty range or topic).
            consumer.unsubscribe()
            consumer.assign(list(live))
            for tp in live:
                consumer.seek(tp, bounds[tp][0])
        while live:
            batches = await consumer.getmany(*live, timeout_ms=1000, max_records=batch_size)
            records = []
            for tp, batch in batches.items():
                records.extend(r for r in batch if r.offset < live[tp])
            for tp in list(live):
                if await consumer.position(tp) >= live[tp]:
                    del live[tp]
            if not records:
                continue
            outcome = await router.process(records, redeliver=redeliver, dead_letters=False, dry_run=dry_run)
            report.records += len(records)
            for name in ("routed", "skipped", "rejected", "messages", "redelivered"):
                setattr(report.total, name, getattr(report.total, name) + getattr(outcome, name))
            if on_progress:
                on_progress(len(records))
    log.info("replay.finished", records=report.records, routed=report.total.routed,
             skipped=report.total.skipped, rejected=report.total.rejected,
             redelivered=report.total.redelivered, messages=report.total.messages, dry_run=dry_run)
    return report


async def _bounds(consumer: AIOKafkaConsumer, selection: ReplayRange) -> dict[TopicPartition, tuple[int, int]]:
    known = consumer.partitions_for_topic(selection.topic)
    if not known and selection.topic in await consumer.topics():
        raise Failure(f"no metadata for topic {selection.topic} yet; try again")
    if not known:
        raise InvalidContent(f"topic {selection.topic} does not exist")
    if selection.partition is not None and selection.partition not in known:
        raise InvalidContent(f"topic {selection.topic} has no partition {selection.partition}")
    tps = [TopicPartition(selection.topic, p) for p in sorted(known)
           if selection.partition is None or p == selection.partition]
    beginnings = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    if selection.to_time is not None:
        found = await consumer.offsets_for_times({tp: _ms(selection.to_time) for tp in tps})
        ends = {tp: found[tp].offset if found[tp] else ends[tp] for tp in tps}
    if selection.from_time is not None:
        found = await consumer.offsets_for_times({tp: _ms(selection.from_time) for tp in tps})
        starts = {tp: found[tp].offset if found[tp] else ends[tp] for tp in tps}
    else:
        starts = {tp: max(selection.from_offset, beginnings[tp]) for tp in tps}
    return {tp: (min(starts[tp], ends[tp]), ends[tp]) for tp in tps}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
