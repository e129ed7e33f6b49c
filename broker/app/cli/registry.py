"""``ejx vendors | portal-clients | authorities | operators``, ``ejx schools``: who may do what.

Every credential kind has the same four commands — ``add``, ``list``, ``revoke``,
``rotate`` — over the one credential table. Tokens are printed once, at
``add`` or ``rotate``; only their SHA-256 is stored. A revoke or rotate takes
effect on the next request of every running server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from broker.access.credentials import Credentials, Kind
from broker.access.registry import Registry, read_schools_csv
from broker.app.cli.moments import shown
from broker.infra.postgres import connected
from broker.settings import Settings

T = TypeVar("T")


def _on_pool(settings: Settings, action: Callable[[Credentials, Registry], Awaitable[T]]) -> T:
    async def run() -> T:
        async with connected(settings, max_size=2) as pool:
            return await action(Credentials(pool), Registry(pool))
    return asyncio.run(run())


def credential_group(kind: Kind, name: str, about: str) -> click.Group:
    """``ejx NAME add|list|revoke|rotate`` for credentials of ``kind``."""

    @click.group(name, help=about)
    def group() -> None:
        pass

    @group.command("add")
    @click.argument("holder")
    @click.option("--district", "districts", multiple=True,
                  help="Scope an authority to this district (repeatable); none = every district.",
                  hidden=kind is not Kind.AUTHORITY)
    @click.pass_obj
    def add(settings: Settings, holder: str, districts: tuple[str, ...]) -> None:
        """Register HOLDER and print its bearer token (shown only this once)."""
        if districts and kind is not Kind.AUTHORITY:
            raise click.BadParameter("only authorities are scoped to districts", param_hint="--district")
        if kind is Kind.VENDOR:
            token = _on_pool(settings, lambda _, registry: registry.add_vendor(holder))
        else:
            token = _on_pool(settings, lambda credentials, _: credentials.add(kind, holder, districts=districts))
        click.echo(token)
        click.echo(f"{kind.label} {holder} registered; store the token now, it is not kept", err=True)

    @group.command("list")
    @click.pass_obj
    def listed(settings: Settings) -> None:
        """Registered holders, their scope and state, times in Moscow time (tokens are never shown)."""
        for info in _on_pool(settings, lambda credentials, _: credentials.listed(kind)):
            state = "revoked" if info.revoked else "active"
            scope = ",".join(info.districts) or ("all districts" if kind is Kind.AUTHORITY else "-")
            rotated = shown(info.rotated_at) if info.rotated_at else "-"
            click.echo(f"{info.name}\t{state}\t{scope}\t{shown(info.created_at)}\trotated {rotated}")

    @group.command("revoke")
    @click.argument("holder")
    @click.pass_obj
    def revoke(settings: Settings, holder: str) -> None:
        """Revoke HOLDER's token at once (every running server refuses it on its next request)."""
        _on_pool(settings, lambda credentials, _: credentials.revoke(kind, holder))
        click.echo(f"{kind.label} {holder} revoked", err=True)

    @group.command("rotate")
    @click.argument("holder")
    @click.pass_obj
    def rotate(settings: Settings, holder: str) -> None:
        """Give HOLDER a new token (printed once); the old one stops working at once."""
        click.echo(_on_pool(settings, lambda credentials, _: credentials.rotate(kind, holder)))
        click.echo(f"{kind.label} {holder} rotated; store the token now, it is not kept", err=True)

    return group


@click.group("schools")
def schools_group() -> None:
    """Schools and the vendor serving each."""


@schools_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def import_schools_command(settings: Settings, file: Path) -> None:
    """Load schools from FILE.csv (school_id, name, district, vendor); safe to re-run."""
    schools = list(read_schools_csv(file.read_bytes()))
    changed, unchanged = _on_pool(settings, lambda _, registry: registry.import_schools(schools))
    click.echo(f"{changed} school(s) added or changed, {unchanged} unchanged")


commands = [
    credential_group(Kind.VENDOR, "vendors", "E-journal vendors allowed to publish events."),
    schools_group,
    credential_group(Kind.PORTAL_CLIENT, "portal-clients", "Clients allowed to read e-diaries (the portal)."),
    credential_group(Kind.AUTHORITY, "authorities",
                     "Education authorities: monitoring, analytics and the dashboard (optionally per district)."),
    credential_group(Kind.OPERATOR, "operators", "Operators: /metrics and the pipeline view."),
]
