"""Operator commands: relay, outbox status, redrive and discard, replay, status.

Each command builds what it needs through the one bootstrap, inside its own event loop, and
closes it on the way out; long-running ones stop cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import click
import structlog
from aiokafka import TopicPartition
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from broker.app import bootstrap
from broker.app.cli.moments import parse_moment, shown
from broker.delivery import outbox
from broker.delivery.relay import RelayOptions
from broker.domain.faults import InvalidContent
from broker.infra import kafka
from broker.infra.postgres import connected
from broker.settings import Settings
from broker.xml.schemas import Schemas
from consumers.replay import ReplayRange, replay

log = structlog.get_logger(__name__)
console = Console(stderr=False)


@click.command("relay")
@click.option("--batch-size", default=RelayOptions.batch_size, show_default=True, type=click.IntRange(min=1),
              help="Rows claimed per round.")
@click.option("--max-attempts", default=RelayOptions.max_attempts, show_default=True, type=click.IntRange(min=1),
              help="Failed attempts before a row is dead.")
@click.pass_obj
def relay_command(settings: Settings, batch_size: int, max_attempts: int) -> None:
    """Deliver outbox rows to the portal and the interagency exchange until stopped."""
    options = bootstrap.relay_options(settings, batch_size=batch_size, max_attempts=max_attempts)

    async def main(stop: asyncio.Event) -> None:
        async with connected(settings) as pool, kafka.running(kafka.producer(settings)) as producer, \
                bootstrap.destinations(settings, pool=pool, producer=producer) as found:
            await bootstrap.relay(pool, found, options=options).run(stop)

    bootstrap.run_until_signalled(main)


@click.group("outbox")
def outbox_group() -> None:
    """The transactional outbox: what waits, what is dead."""


@outbox_group.command("status")
@click.pass_obj
def outbox_status_command(settings: Settings) -> None:
    """Counts by destination and status, oldest pending age, dead rows with their last error."""
    async def main() -> None:
        async with connected(settings) as pool:
            console.print(_summary_table(await outbox.summary(pool)))
            dead = await outbox.dead_messages(pool)
            if dead:
                table = Table(title="dead rows (newest first)")
                for column in ("destination", "message_id", "attempts", "created", "last error"):
                    table.add_column(column)
                for row in dead:
                    table.add_row(row.destination, str(row.message_id), str(row.attempts),
                                  shown(row.created_at), (row.last_error or "")[:120])
                console.print(table)
    asyncio.run(main())


def _summary_table(rows: list[outbox.DestinationSummary]) -> Table:
    table = Table(title="outbox")
    for column in ("destination", "pending", "delivered", "dead", "oldest pending"):
        table.add_column(column, justify="right" if column != "destination" else "left")
    now = datetime.now(UTC)
    for row in rows:
        age = f"{(now - row.oldest_pending).total_seconds():.0f} s" if row.oldest_pending else "-"
        table.add_row(row.destination, str(row.pending), str(row.delivered), str(row.dead), age)
    if not rows:
        table.add_row("(empty)", "0", "0", "0", "-")
    return table


@outbox_group.command("redrive")
@click.option("--dead", "dead", is_flag=True, required=True, help="Redrive dead rows (the only kind there is).")
@click.option("--destination", default=None, help="Only this destination, e.g. portal.")
@click.option("--since", default=None, help="Only rows created at or after this ISO 8601 time (no zone: Moscow).")
@click.pass_obj
def outbox_redrive_command(settings: Settings, dead: bool, destination: str | None, since: str | None) -> None:
    """Return dead rows to pending with a fresh attempt budget; MessageIDs stay the same."""
    async def main() -> int:
        async with connected(settings) as pool:
            return await outbox.redrive(pool, destination=destination, since=parse_moment(since))
    click.echo(f"redriven: {asyncio.run(main())} row(s)")


@outbox_group.command("discard")
@click.argument("message_ids", nargs=-1, required=True, type=click.UUID)
@click.option("--destination", default=None, help="Only this destination's row of each MessageID.")
@click.pass_obj
def outbox_discard_command(settings: Settings, message_ids: tuple[uuid.UUID, ...], destination: str | None) -> None:
    """Give up on dead rows that must never be delivered; the later rows of their keys go on. Exit 1 naming
    each MessageID that had no dead row to discard."""
    async def main() -> outbox.Discarded:
        async with connected(settings) as pool:
            return await outbox.discard(pool, message_ids, destination=destination)
    done = asyncio.run(main())
    click.echo(f"discarded: {done.rows} row(s)")
    if done.kept:
        where = f" for {destination}" if destination else ""
        raise InvalidContent("no dead row to discard" + where + ": " + "; ".join(
            f"{m} ({statuses or 'not in the outbox'})" for m, statuses in done.kept.items()))


@click.command("replay")
@click.option("--topic", default=None, help="Default: the events topic.")
@click.option("--from-time", default=None, help="First record at or after this ISO 8601 time (no zone: Moscow).")
@click.option("--from-offset", type=int, default=None, help="First offset in every selected partition.")
@click.option("--to-time", default=None,
              help="Stop before this ISO 8601 time (no zone: Moscow; default: the current end).")
@click.option("--partition", type=int, default=None, help="Only this partition.")
@click.option("--dry-run", is_flag=True, help="Do everything, then roll back: report what would happen.")
@click.option("--redeliver", is_flag=True,
              help="Give already routed events new MessageIDs with ReferenceMessageID = the original.")
@click.option("--routing", "routing_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="Routing rules (default: EJX_ROUTING_FILE, else the packaged rules).")
@click.pass_obj
def replay_command(settings: Settings, topic: str | None, from_time: str | None, from_offset: int | None,
                   to_time: str | None, partition: int | None, dry_run: bool, redeliver: bool,
                   routing_file: Path | None) -> None:
    """Re-feed events through the router; the inbox keeps it from delivering anything twice."""
    try:
        selection = ReplayRange(topic=topic or settings.events_topic, from_time=parse_moment(from_time),
                                from_offset=from_offset, to_time=parse_moment(to_time), partition=partition)
    except InvalidContent as fault:
        raise click.UsageError(fault.description) from None

    async def main():
        async with connected(settings) as pool, kafka.running(kafka.producer(settings)) as producer:
            router = bootstrap.router(settings, pool=pool, producer=producer, schemas=Schemas.load(),
                                      routing_file=routing_file)
            with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=console) as progress:
                task = progress.add_task("replay", total=None)
                return await replay(settings, router, selection, redeliver=redeliver, dry_run=dry_run,
                                    on_start=lambda total: progress.update(task, total=total),
                                    on_progress=lambda n: progress.advance(task, n))

    report = asyncio.run(main())
    table = Table(title="replay" + (" (dry run: nothing written)" if dry_run else ""))
    for column in ("records", "routed", "skipped (seen)", "redelivered", "rejected", "outbox rows"):
        table.add_column(column, justify="right")
    total = report.total
    table.add_row(*(str(v) for v in (report.records, total.routed, total.skipped, total.redelivered,
                                     total.rejected, total.messages)))
    console.print(table)
    console.print("partitions: " + ", ".join(f"{p}: [{a}, {b})" for p, (a, b) in sorted(report.partitions.items())))


@click.command("status")
@click.option("--group", "groups", multiple=True, default=("ejx-router", "ejx-analytics"), show_default=True,
              help="Consumer groups whose lag to show.")
@click.pass_obj
def status_command(settings: Settings, groups: tuple[str, ...]) -> None:
    """Consumer-group lag per partition of the events topic, and the outbox summary."""
    async def main() -> None:
        if not await kafka.topic_exists(settings, settings.events_topic):
            raise InvalidContent(f"topic {settings.events_topic} does not exist (EJX_EVENTS_TOPIC; `ejx serve` "
                                 "creates it)")
        table = Table(title=f"lag on {settings.events_topic}")
        for column in ("group", "partition", "committed", "end", "lag"):
            table.add_column(column, justify="right" if column != "group" else "left")
        for group in groups:
            consumer = kafka.consumer(settings, settings.events_topic, group_id=None)
            async with kafka.running(consumer):
                tps = [TopicPartition(settings.events_topic, p)
                       for p in sorted(consumer.partitions_for_topic(settings.events_topic) or ())]
                ends = await consumer.end_offsets(tps) if tps else {}
                starts = await consumer.beginning_offsets(tps) if tps else {}
            reader = kafka.consumer(settings, group_id=group)
            async with kafka.running(reader):
                for tp in tps:
                    committed = await reader.committed(tp)
                    # What is left to read: a group without a commit, or one behind retention, starts at the log's
                    # start (auto_offset_reset earliest), not at offset 0.
                    lag = ends[tp] - max(committed or 0, starts[tp])
                    table.add_row(group, str(tp.partition), "-" if committed is None else str(committed),
                                  str(ends[tp]), str(lag))
        console.print(table)
        async with connected(settings) as pool:
            console.print(_summary_table(await outbox.summary(pool)))
    asyncio.run(main())


commands = [relay_command, outbox_group, replay_command, status_command]
