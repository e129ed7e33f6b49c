"""``ejx import csv`` and ``ejx import oneroster``: operators load vendors' files.

The same :class:`~adapters.ingest.IngestService` as the REST API does the work,
so files are validated, authorised and deduplicated exactly like requests;
re-running an import adds nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from adapters.csv_import import (
    ImportReport,
    RejectsFile,
    RowMapper,
    import_csv,
)
from adapters.ingest import IngestService
from adapters.oneroster import OneRosterMapper, read_bundle
from adapters.problems import Problem
from broker.app import bootstrap
from broker.domain.calendar import SCHOOL_TIMEZONE
from broker.domain.faults import Failure, InvalidContent
from broker.settings import Settings


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown time zone {name!r}", param_hint="--timezone") from None


def _rejects_path(source: Path, given: Path | None) -> Path:
    return given or source.with_name(source.name.rstrip("/") + ".rejects.csv")


def _rejects_file(path: Path) -> RejectsFile:
    """Opened before anything is published: an export on a read-only share has its default rejects file there."""
    try:
        return RejectsFile(path)
    except OSError as error:
        raise Failure(f"cannot write the rejects file {path}: {error.strerror or error} (give --rejects)") from None


def _summary(console: Console, report: ImportReport, rejects: Path, *, skipped: int = 0) -> None:
    """Every row is counted once: accepted, accepted before, skipped (OneRoster's ungraded results) or rejected."""
    console.print(f"{report.rows} row(s): [green]{report.accepted} accepted[/], "
                  f"{report.duplicates} already accepted before, "
                  + (f"{skipped} skipped (not submitted, or exempt without a score), " if skipped else "")
                  + f"[{'red' if report.rejected else 'green'}]{report.rejected} rejected[/]"
                  + (f" → {rejects}" if report.rejected else ""))


@click.group("import")
def import_group() -> None:
    """Load e-journal exports (CSV, OneRoster 1.2) as events."""


@import_group.command("csv")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--vendor", required=True, help="The vendor whose export this is (see `ejx vendors list`).")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path),
              help="Where rejected rows go (line, code, path, reason); default FILE.rejects.csv.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 1000),
              help="Rows published per Kafka transaction.")
@click.option("--timezone", default=SCHOOL_TIMEZONE, show_default=True,
              help="Zone of date-times without an offset (e.g. 14.10.2026 09:41).")
@click.pass_obj
def import_csv_command(settings: Settings, file: Path, vendor: str, rejects: Path | None, batch_size: int,
                       timezone: str) -> None:
    """Import an e-journal CSV export FILE (UTF-8 or CP1251, Russian or English headers)."""
    zone = _zone(timezone)
    rejects_path = _rejects_path(file, rejects)
    console = Console(stderr=True)

    async def run() -> ImportReport:
        async with bootstrap.ingest_service(settings) as service:
            sender = await service.registry.vendor(vendor)
            sink = _rejects_file(rejects_path)
            columns = [TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TimeRemainingColumn()]
            try:
                with Progress(*columns, console=console, transient=False) as progress:
                    task = progress.add_task(file.name, total=file.stat().st_size)
                    return await import_csv(service, sender, file, rejects=sink, batch_size=batch_size,
                                            mapper=RowMapper(timezone=zone),
                                            on_progress=lambda done: progress.update(task, completed=done))
            finally:
                sink.close()

    report = asyncio.run(run())
    _summary(console, report, rejects_path)


@import_group.command("oneroster")
@click.argument("directory", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--vendor", required=True, help="The vendor whose gradebook this is.")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path),
              help="Where unmappable or rejected results go; default DIR.rejects.csv.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 1000))
@click.option("--timezone", default=SCHOOL_TIMEZONE, show_default=True,
              help="The schools' zone: the date of a timestamp with an offset (lesson date, school year) there.")
@click.pass_obj
def import_oneroster_command(settings: Settings, directory: Path, vendor: str, rejects: Path | None,
                             batch_size: int, timezone: str) -> None:
    """Import a OneRoster 1.2 gradebook DIR (results, lineItems, classes, academicSessions; JSON or CSV)."""
    mapper = OneRosterMapper(timezone=_zone(timezone))
    rejects_path = _rejects_path(directory, rejects)
    console = Console(stderr=True)

    async def run() -> tuple[ImportReport, int]:
        bundle = read_bundle(directory)
        async with bootstrap.ingest_service(settings) as service:
            sender = await service.registry.vendor(vendor)
            mapping = await mapper.map(bundle, source_system=sender.vendor_id, ledger=service.ledger)
            return await _publish_mapped(service, sender, mapping.events, mapping.problems, mapping.skipped,
                                         rejects_path, batch_size, console,
                                         total=len(bundle["results"])), mapping.skipped

    report, skipped = asyncio.run(run())
    _summary(console, report, rejects_path, skipped=skipped)


async def _publish_mapped(service: IngestService, sender, events, problems: list[Problem], skipped: int,  # noqa: ANN001
                          rejects_path: Path, batch_size: int, console: Console, *, total: int) -> ImportReport:
    report = ImportReport(rows=total, rejected=len(problems))
    sink = _rejects_file(rejects_path)
    try:
        for problem in problems:
            sink.write(problem)
        with Progress(TextColumn("[bold]results"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console) as progress:
            task = progress.add_task("results", total=total)
            progress.update(task, advance=len(problems) + skipped)
            for start in range(0, len(events), batch_size):
                batch = events[start:start + batch_size]
                receipts, refused = await service.import_batch(sender, batch)
                report.accepted += sum(not r.duplicate for r in receipts)
                report.duplicates += sum(r.duplicate for r in receipts)
                report.rejected += len(refused)
                for problem in refused:
                    sink.write(problem)
                progress.update(task, advance=len(batch))
    finally:
        sink.close()
    if not events and not problems and not skipped:
        raise InvalidContent("the gradebook holds no results")
    return report


commands = [import_group]
