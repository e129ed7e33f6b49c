"""The ``ejx`` command: one root group; each CLI module contributes its commands.

Any :class:`~broker.domain.faults.Fault` escaping a command becomes one line on
stderr, ``<code>: <description>``, and exit status 1 — never a traceback. Tools
outside production (the dev tools) add commands through the ``ejx.commands``
entry point, so nothing here imports them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import click
from pydantic import ValidationError

from broker.app.cli import (
    database,
    documents,
    imports,
    keys,
    log,
    operations,
    participants,
    registry,
    serve,
    smev3,
)
from broker.domain.faults import Fault, InvalidContent
from broker.ops import logs
from broker.settings import Settings

PLUGIN_GROUP = "ejx.commands"
"""Entry-point group of modules exporting a ``commands`` list of click commands."""


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
    try:
        settings = Settings()
    except ValidationError as error:  # an EJX_* variable: one line naming each, not pydantic's traceback
        raise InvalidContent("settings: " + "; ".join(_setting_error(e) for e in error.errors())) from None
    logs.configure(settings.log_level)
    ctx.obj = settings


def _setting_error(error: Mapping[str, Any]) -> str:
    where = "".join(f"EJX_{str(part).upper()}: " for part in error["loc"][:1])
    return where + str(error["msg"]).removeprefix("Value error, ")


for _module in (database, keys, documents, smev3, registry, participants, imports, serve, operations, log):
    for _command in _module.commands:
        main.add_command(_command)
for _plugin in entry_points(group=PLUGIN_GROUP):
    for _command in _plugin.load().commands:
        main.add_command(_command)
