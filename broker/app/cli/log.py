"""``ejx log archive | verify | prune``: the message log for operators and auditors.

Times are stored in UTC and shown in Europe/Moscow, the zone the people reading
them work in; a time given without a zone is read as Moscow time too. ``verify``
with archive files needs no database, only ejx's certificate; a broken chain is
reported as its first broken record and exit status 1.
"""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from broker.app.cli.moments import MOSCOW, parse_moment, shown
from broker.audit import message_log
from broker.audit.archive import verify_archives
from broker.audit.chain import Break
from broker.audit.manifest import ArchiveSummary, ManifestSigner
from broker.infra.postgres import connected, outage_as_failure
from broker.settings import Settings
from broker.xml.signing import keys

_DURATION = re.compile(r"(\d+)\s*([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def _duration(value: str) -> timedelta:
    """``400d``, ``36h``, ``90m``."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration like 400d, 36h or 90m")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})




def _console() -> Console:
    """Per command, so the terminal's width (or COLUMNS) is read when the command runs."""
    return Console()


def _progress(title: str) -> Progress:
    return Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=_console())


@click.group("log")
def log_group() -> None:
    """The message log: every message ejx signed or received, hash-chained, archived into signed files."""


@log_group.command("archive")
@click.option("--until", "until", required=True, help="Archive records up to this ISO 8601 time (no zone: Moscow).")
@click.option("--key", "key_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Signing key (PEM); default ejx's own (EJX_KEY_FILE).")
@click.option("--cert", "cert_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Its certificate (PEM); default ejx's own (EJX_CERT_FILE).")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def archive_command(settings: Settings, until: str, key_file: Path | None, cert_file: Path | None, out: Path) -> None:
    """Write the records up to --until not archived yet into OUT, one signed tar file; never overwrites."""
    moment = parse_moment(until)
    signer = ManifestSigner.from_pem_files(key_file or settings.signing_key_file,
                                           cert_file or settings.signing_cert_file)

    async def main() -> ArchiveSummary | None:
        with outage_as_failure(), _progress("archive") as progress:
            task = progress.add_task("archive", total=None)
            async with connected(settings, max_size=2, maintenance=True) as pool:
                return await message_log.archive(pool, until=moment, out=out, signer=signer,
                                                 on_start=lambda total: progress.update(task, total=total),
                                                 on_progress=lambda n: progress.advance(task, n))

    summary = asyncio.run(main())
    if summary is None:
        click.echo(f"nothing to archive up to {shown(moment)}")
        return
    _console().print(_archives_table([summary], title=f"archived into {out}"))


@log_group.command("verify")
@click.option("--cert", "cert_files", type=click.Path(path_type=Path, exists=True, dir_okay=False), multiple=True,
              help="Certificate(s) archives were signed with (PEM); default ejx's own (EJX_CERT_FILE).")
@click.option("--live", is_flag=True,
              help="With ARCHIVES: then the live table too, its newest archive rows held against those files "
                   "(give them up to the newest): a row registered without its signed file is a break.")
@click.argument("archives", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def verify_command(settings: Settings, cert_files: tuple[Path, ...], live: bool, archives: tuple[Path, ...]) -> None:
    """Re-compute ARCHIVES (offline, in the order given, each linked to the one before) or, with none,
    the live table; name the first broken record and exit 1 if there is one."""
    held: list[ArchiveSummary] = []
    if archives:
        trusted = [c for path in (cert_files or (settings.signing_cert_file,)) for c in keys.load_certificates(path)]
        with _progress("verify") as progress:
            task = progress.add_task("verify", total=None)
            verdict = verify_archives(list(archives), trusted=trusted,
                                      on_start=lambda total: progress.update(task, total=total),
                                      on_progress=lambda n: progress.advance(task, n))
        if verdict.archives:
            title = "archives verified" if verdict.broken is None else "archives verified before the break"
            _console().print(_archives_table(verdict.archives, title=title))
        if not live or verdict.broken is not None:
            _conclude(verdict.checked, verdict.broken)
            return
        click.echo(f"ok: {verdict.checked} record(s) verified (archives)")
        held = verdict.archives

    async def table() -> message_log.LiveVerdict:
        with outage_as_failure(), _progress("verify") as progress:
            task = progress.add_task("verify", total=None)
            async with connected(settings, max_size=2, maintenance=True) as pool:
                return await message_log.verify(pool, on_start=lambda total: progress.update(task, total=total),
                                                on_progress=lambda n: progress.advance(task, n), held_against=held)

    verdict = asyncio.run(table())
    _conclude(verdict.checked, verdict.broken, f"live table, chain head at record {verdict.head.sequence}")


@log_group.command("prune")
@click.option("--older-than", "older_than", required=True, help="Retention, e.g. 1095d: whole archives older go.")
@click.pass_obj
def prune_command(settings: Settings, older_than: str) -> None:
    """Delete the records of archives whose last record is older than --older-than; nothing unarchived."""
    retention = _duration(older_than)

    async def main() -> int:
        with outage_as_failure():
            async with connected(settings, max_size=2, maintenance=True) as pool:
                return await message_log.prune(pool, older_than=retention)

    click.echo(f"pruned {asyncio.run(main())} archived record(s)")


def _conclude(checked: int, broken: Break | None, what: str = "") -> None:
    """One plain line, whatever the terminal's width, for scripts to match; exit 1 on a break."""
    suffix = f" ({what})" if what else ""
    if broken is None:
        click.echo(f"ok: {checked} record(s) verified{suffix}")
        return
    click.echo(f"BROKEN {broken}{suffix}; {checked} record(s) before it verified")
    sys.exit(1)


def _archives_table(summaries: list[ArchiveSummary], *, title: str) -> Table:
    table = Table(title=title)
    for column in ("archive", "number", "records", "sequences", "first (MSK)", "last (MSK)"):
        table.add_column(column, justify="right" if column in ("number", "records") else "left")
    for summary in summaries:
        m = summary.manifest
        table.add_row(summary.name, str(m.number), str(m.records), f"{m.first_sequence}..{m.last_sequence}",
                      f"{m.first_recorded_at.astimezone(MOSCOW):%Y-%m-%d %H:%M:%S}",
                      f"{m.last_recorded_at.astimezone(MOSCOW):%Y-%m-%d %H:%M:%S}")
    return table


commands = [log_group]
