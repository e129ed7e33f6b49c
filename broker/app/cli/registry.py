"""``ejx vendors``, ``ejx schools``, ``ejx portal-clients``: who may send and who may read.

Tokens are printed once, at creation; only their SHA-256 is stored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from broker.access.portal_clients import PortalClients
from broker.access.registry import Registry, read_schools_csv
from broker.infra.postgres import connected
from broker.settings import Settings


async def _with_registry(settings: Settings, action):  # noqa: ANN001, ANN202 - CLI plumbing
    async with connected(settings, max_size=2) as pool:
        return await action(Registry(pool))


@click.group("vendors")
def vendors_group() -> None:
    """E-journal vendors allowed to publish events."""


@vendors_group.command("add")
@click.argument("name")
@click.pass_obj
def add_vendor_command(settings: Settings, name: str) -> None:
    """Register vendor NAME and print its bearer token (shown only this once)."""
    token = asyncio.run(_with_registry(settings, lambda registry: registry.add_vendor(name)))
    click.echo(token)
    click.echo(f"vendor {name} registered; store the token now, it is not kept", err=True)


@vendors_group.command("list")
@click.pass_obj
def list_vendors_command(settings: Settings) -> None:
    """Registered vendors (tokens are never shown)."""
    for vendor in asyncio.run(_with_registry(settings, lambda registry: registry.vendors())):
        state = "disabled" if vendor.disabled else "enabled"
        click.echo(f"{vendor.vendor_id}\t{state}\t{vendor.created_at.isoformat()}")


@click.group("schools")
def schools_group() -> None:
    """Schools and the vendor serving each."""


@schools_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def import_schools_command(settings: Settings, file: Path) -> None:
    """Load schools from FILE.csv (school_id, name, district, vendor); safe to re-run."""
    schools = list(read_schools_csv(file.read_bytes()))
    changed, unchanged = asyncio.run(_with_registry(settings, lambda registry: registry.import_schools(schools)))
    click.echo(f"{changed} school(s) added or changed, {unchanged} unchanged")


@click.group("portal-clients")
def portal_clients_group() -> None:
    """Clients allowed to read e-diaries (the public-services portal)."""


@portal_clients_group.command("add")
@click.argument("name")
@click.pass_obj
def add_portal_client_command(settings: Settings, name: str) -> None:
    """Register portal client NAME and print its bearer token (shown only this once)."""

    async def run() -> str:
        async with connected(settings, max_size=1) as pool:
            return await PortalClients(pool).add(name)

    click.echo(asyncio.run(run()))
    click.echo(f"portal client {name} registered; store the token now, it is not kept", err=True)


commands = [vendors_group, schools_group, portal_clients_group]
