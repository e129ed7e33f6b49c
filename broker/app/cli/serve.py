"""``ejx serve``: the long-running process, any subset of the components."""

from __future__ import annotations

import asyncio
import sys

import click

from broker.app import bootstrap
from broker.settings import Settings


@click.command("serve")
@click.option("--components", default=",".join(bootstrap.COMPONENTS), show_default=True,
              help="Comma-separated subset to run in this process.")
@click.pass_obj
def serve_command(settings: Settings, components: str) -> None:
    """Run ejx components until SIGTERM/SIGINT, then finish in-flight batches and exit."""
    try:
        names = bootstrap.parse_components(components)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--components") from None
    asyncio.run(bootstrap.serve(settings, names))
    sys.exit(0)


commands = [serve_command]
