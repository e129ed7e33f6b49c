"""``ejx serve``: the long-running process, any subset of the components."""

from __future__ import annotations

import sys

import click

from broker.app import bootstrap
from broker.settings import Settings


@click.command("serve")
@click.option("--components", default=",".join(bootstrap.COMPONENTS), show_default=True,
              help="Comma-separated subset to run in this process.")
@click.option("--fail-fast", is_flag=True, default=None,
              help="Exit at once if PostgreSQL or Kafka is down at start (default: wait with backoff).")
@click.pass_obj
def serve_command(settings: Settings, components: str, fail_fast: bool | None) -> None:
    """Run ejx components until SIGTERM/SIGINT, then finish in-flight batches and exit.

    A dependency down at start is waited for (one log line per try) unless --fail-fast.
    """
    if fail_fast:
        settings = settings.model_copy(update={"startup_fail_fast": True})
    try:
        names = bootstrap.parse_components(components)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--components") from None
    bootstrap.run_serve(settings, names)
    sys.exit(0)


commands = [serve_command]
