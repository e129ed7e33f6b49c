"""``ejx serve`` and ``ejx demo``: the long-running process and the whole job, end to end."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich.console import Console

from broker.app import bootstrap
from broker.devtools.demo import Demo, DemoOptions, render
from broker.devtools.infra.commands import infra_up
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


@click.command("demo")
@click.option("--schools", default=DemoOptions.schools, show_default=True, type=click.IntRange(1, 500))
@click.option("--students-per-school", default=DemoOptions.students_per_school, show_default=True,
              type=click.IntRange(3, 2000))
@click.option("--days", default=DemoOptions.days, show_default=True, type=click.IntRange(1, 60))
@click.option("--seed", default=DemoOptions.seed, show_default=True, type=int)
@click.option("--keep", is_flag=True, help="Keep ejx, the dashboard and the receivers running after the report.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as JSON to this file.")
@click.pass_obj
def demo_command(settings: Settings, schools: int, students_per_school: int, days: int, seed: int, keep: bool,
                 json_file: Path | None) -> None:
    """A simulated school day through every adapter to both verifying receivers; exit 1 if anything was
    lost, doubled or badly signed."""
    infra_up(settings)
    options = DemoOptions(schools=schools, students_per_school=students_per_school, days=days, seed=seed,
                          keep=keep)
    console = Console()
    report = asyncio.run(Demo(settings, options, console).run())
    render(report, console)
    if json_file:
        json_file.write_text(report.as_json(), encoding="utf-8")
    sys.exit(1 if report.problems else 0)


commands = [serve_command, demo_command]
