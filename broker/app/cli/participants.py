"""``ejx participants``: the SMEV 3 information systems that may pull, registered by certificate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import click

from broker.access.participants import CertificateFacts, Participants
from broker.app.cli.moments import MOSCOW
from broker.infra.postgres import connected
from broker.settings import Settings


@click.group("participants")
def participants_group() -> None:
    """Information systems (RSMEV, EPGU, ...) that authenticate to the SMEV 3 endpoint by their signature."""


@participants_group.command("add")
@click.argument("mnemonic")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The system's X.509 signing certificate (PEM), GOST or not.")
@click.option("--service", default=None,
              help="The service it may use: `diary` (EJX_DIARY_SERVICE) lets it ask for pupils' e-diaries; any "
                   "other text only describes it. A further certificate of the same MNEMONIC without --service "
                   "keeps the service of its newest one.")
@click.pass_obj
def add_participant_command(settings: Settings, mnemonic: str, cert_file: Path, service: str | None) -> None:
    """Register CERT for MNEMONIC; another certificate for the same MNEMONIC is kept beside it (rotation)."""
    facts = CertificateFacts.from_pem(cert_file.read_bytes())

    async def run() -> bool:
        async with connected(settings, max_size=1) as pool:
            return await Participants(pool).add(mnemonic, facts, service=service)

    added = asyncio.run(run())
    click.echo(f"{mnemonic}: certificate {facts.serial_number} ({facts.subject}) "
               f"{'registered' if added else 'was registered already'}")


@participants_group.command("revoke")
@click.argument("mnemonic")
@click.option("--serial", default=None, help="Only the certificate of this serial (hexadecimal, as "
                                            "`ejx participants list` shows it); without it, every one of MNEMONIC.")
@click.pass_obj
def revoke_participant_command(settings: Settings, mnemonic: str, serial: str | None) -> None:
    """Stop MNEMONIC's certificate(s) at once (a leaked key): its next SMEV 3 request is SenderIsNotRegistered."""
    async def run():
        async with connected(settings, max_size=1) as pool:
            return await Participants(pool).revoke(mnemonic, serial_number=serial)

    for p in asyncio.run(run()):
        click.echo(f"{mnemonic}: certificate {p.serial_number} ({p.subject}) revoked")


@participants_group.command("list")
@click.pass_obj
def list_participants_command(settings: Settings) -> None:
    """Mnemonic, subject, serial and validity (Europe/Moscow) of every registered certificate."""
    async def run():
        async with connected(settings, max_size=1) as pool:
            return await Participants(pool).all()

    now = datetime.now(UTC)
    for p in asyncio.run(run()):
        state = "valid" if p.valid_at(now) else ("expired" if now > p.not_after else "not yet valid")
        click.echo("\t".join((p.mnemonic, p.service or "-", p.subject, p.serial_number,
                              _moscow(p.not_before), _moscow(p.not_after), state)))


def _moscow(moment: datetime) -> str:
    return moment.astimezone(MOSCOW).isoformat(timespec="seconds")


commands = [participants_group]
