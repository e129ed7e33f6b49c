"""The ``ejx`` command: one root group; each domain module contributes its commands.

Any :class:`~broker.domain.faults.Fault` escaping a command becomes one line on stderr,
``<code>: <description>``, and exit status 1 — never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from broker.domain.faults import Fault
from broker.ops import logs
from broker.settings import Settings

# Modules that export a ``commands`` list of click commands or groups.
COMMAND_MODULES = (
    "broker.devtools.infra.commands",
    "broker.infra.postgres",
    "broker.app.cli.documents",
    "broker.access.registry",
    "broker.access.portal_clients",
    "broker.app.cli.imports",
    "broker.app.cli.serve",
    "broker.app.cli.operations",
)


class FaultAwareGroup(click.Group):
    """Turns faults into the one-line form scripts rely on."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except Fault as fault:
            click.echo(f"{fault.code}: {fault.description}", err=True)
            sys.exit(1)


@click.group(cls=FaultAwareGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """ejx — exchange broker for school e-journals."""
    settings = Settings()
    logs.configure(settings.log_level)
    ctx.obj = settings


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(_name).commands:
        main.add_command(_command)
