"""The dev tools' commands: ``ejx infra``, ``ejx demo``, ``ejx chaos``, ``ejx receiver``.

Registered with the ``ejx`` CLI through the ``ejx.commands`` entry point (see
pyproject.toml), so production code never imports this package.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import click
import uvicorn
from rich.console import Console
from rich.table import Table

from broker.app import bootstrap
from broker.devtools.chaos.cluster import KILLABLE, SOAK_RETENTION_S, TARGETS
from broker.devtools.chaos.faults import FaultPlan
from broker.devtools.chaos.report import render as render_chaos
from broker.devtools.chaos.run import Chaos, ChaosOptions
from broker.devtools.chaos.vendor import LoadPlan
from broker.devtools.demo.report import render
from broker.devtools.demo.run import Demo, DemoOptions
from broker.devtools.demo.setup import INTERAGENCY_PARTICIPANT, agency_pair
from broker.devtools.infra.commands import infra_group, infra_up
from broker.devtools.migrations import RECEIVER_TABLES
from broker.devtools.receivers import (
    InteragencyPullClient,
    PullClientOptions,
    ReceiverLog,
    portal_receiver_app,
)
from broker.infra.migrations import migrate
from broker.infra.postgres import connected
from broker.settings import Settings
from broker.smev3.client import Smev3Client, pinned_certificates
from broker.xml.signing import SigningKey, Verifier

console = Console(stderr=False)
Result = TypeVar("Result")


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
    try:
        report = asyncio.run(_until_terminated(Demo(settings, options, console).run()))
    except asyncio.CancelledError:
        console.print("ejx demo: stopped by SIGTERM; its ejx and receivers were stopped first")
        sys.exit(128 + signal.SIGTERM)
    render(report, console)
    if json_file:
        json_file.write_text(report.as_json(), encoding="utf-8")
    sys.exit(1 if report.problems else 0)


async def _until_terminated(run: Awaitable[Result]) -> Result:
    """``run``, cancelled by SIGTERM like Ctrl-C cancels it, so its clean-up stops the processes it started
    (killed at once, the demo would leave ejx and the receivers running)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    return await run


@click.command("chaos")
@click.option("--events", default=2000, show_default=True, type=click.IntRange(1),
              help="Events the vendor sends, as fast as ejx takes them (unless --rate and --seconds).")
@click.option("--rate", type=click.FloatRange(min=0.1), help="Events per second offered (with --seconds).")
@click.option("--seconds", type=click.FloatRange(min=1), help="How long the load lasts at --rate.")
@click.option("--targets", default=",".join(KILLABLE), show_default=True,
              help=f"What may be killed, of {', '.join(TARGETS)} (kafka-broker: one node of three, --brokers 3).")
@click.option("--brokers", default=1, show_default=True, type=click.Choice(["1", "3"]),
              help="Kafka nodes of the run's own cluster (3: replication factor 3, two in sync).")
@click.option("--every", "every_s", default=20.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Seconds between kills.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seeds the order of the kills.")
@click.option("--no-kills", is_flag=True, help="A soak: load only, resources sampled.")
@click.option("--drain-timeout", "drain_timeout_s", default=600.0, show_default=True, type=click.FloatRange(min=1),
              help="Longest wait after the load for every acknowledged event to arrive.")
@click.option("--retention", "retention_s", type=click.FloatRange(min=1),
              help="Seconds every retention of the run's processes lasts (below production's minimums); "
                   "default with --no-kills: 300, else the settings'.")
@click.option("--batch", default=LoadPlan.batch, show_default=True, type=click.IntRange(1, 1000),
              help="Events per POST.")
@click.option("--keep-logs", is_flag=True, help="Keep the run's logs and data even when it passes.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report (with a resource sample a minute) as JSON to this file.")
@click.pass_obj
def chaos_command(settings: Settings, events: int, rate: float | None, seconds: float | None, targets: str,
                  brokers: str, every_s: float, seed: int, no_kills: bool, drain_timeout_s: float,
                  retention_s: float | None, batch: int, keep_logs: bool, json_file: Path | None) -> None:
    """Components, Kafka and PostgreSQL (its own) as separate processes under a vendor's REST load, killed
    (SIGKILL) and restarted at random; then drain and count per destination. Exit 1 on any loss, doubling or
    refused envelope, or a target never killed."""
    if (rate is None) != (seconds is None):
        raise click.UsageError("--rate and --seconds go together")
    chosen = tuple(t.strip() for t in targets.split(",") if t.strip())
    unknown = sorted(set(chosen) - set(TARGETS))
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(TARGETS)}", param_hint="--targets")
    if "kafka-broker" in chosen and brokers != "3":
        raise click.BadParameter("kafka-broker kills one node of three: add --brokers 3", param_hint="--targets")
    load = LoadPlan(events=int(rate * seconds) if rate and seconds else events, rate=rate,
                    batch=min(batch, max(1, int(rate))) if rate else batch)
    faults = None if no_kills else FaultPlan(targets=chosen, every_s=every_s, seed=seed)
    options = ChaosOptions(load=load, faults=faults, drain_timeout_s=drain_timeout_s, keep_logs=keep_logs,
                           brokers=int(brokers), retention_s=retention_s or (SOAK_RETENTION_S if no_kills else None))
    report = asyncio.run(Chaos(settings, options, console).run())
    render_chaos(report, Console(width=None if sys.stdout.isatty() else 140))
    if json_file:
        json_file.write_text(report.as_json(), encoding="utf-8")
    sys.exit(1 if report.problems else 0)


@click.group("receiver")
def receiver_group() -> None:
    """Reference receivers that verify every signature and record every MessageID."""


def _verifier(settings: Settings) -> Verifier:
    return Verifier.from_pem_files([settings.trusted_certs_file])


async def _with_receiver_tables(pool) -> None:  # noqa: ANN001
    """The receivers keep their own tables (never in production's migrations)."""
    async with pool.acquire() as conn:
        await migrate(conn, RECEIVER_TABLES)


@receiver_group.command("portal")
@click.option("--port", type=int, default=8090, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--verify-share", type=click.FloatRange(0.01, 1.0), default=1.0, show_default=True,
              help="Share of signatures checked; below 1 only for benchmarks (every envelope still passes "
                   "the shape rules and is recorded).")
@click.pass_obj
def receiver_portal_command(settings: Settings, port: int, host: str, verify_share: float) -> None:
    """Serve POST /envelopes as the portal would; GET /report for the counts."""
    async def main(stop: asyncio.Event) -> None:
        async with connected(settings) as pool:
            await _with_receiver_tables(pool)
            app = portal_receiver_app(verifier=_verifier(settings), receipts=ReceiverLog(pool, "portal"),
                                      verified_share=verify_share)
            server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            serving = asyncio.create_task(server.serve())
            await stop.wait()
            server.should_exit = True
            await serving
            _print_report(await ReceiverLog(pool, "portal").report())

    bootstrap.run_until_signalled(main)


@receiver_group.command("interagency")
@click.option("--url", default=None, help="ejx's SMEV 3 endpoint (default: ejx's HTTP server, /smev3/1.2).")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The agency's signing key (default: <state>/keys/rsmev/ejx.key, GOST).")
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Its certificate, registered with `ejx participants add` (default: <state>/keys/rsmev/ejx.crt).")
@click.option("--recipient", default=INTERAGENCY_PARTICIPANT, show_default=True,
              help="The participant the certificate is registered as.")
@click.pass_obj
def receiver_interagency_command(settings: Settings, url: str | None, key_file: Path | None,
                                 cert_file: Path | None, recipient: str) -> None:
    """Pull as an agency over SMEV 3: GetRequest, verify every signature (trusting ejx's SMEV certificate),
    record, Ack — until stopped."""
    url = url or f"http://{settings.http_host}:{settings.http_port}/smev3/1.2"
    default_key, default_cert = agency_pair(settings)
    key = SigningKey.from_pem_files(key_file or default_key, cert_file or default_cert)
    trusted = pinned_certificates(settings.smev_signing_cert_file)

    async def main(stop: asyncio.Event) -> None:
        async with connected(settings) as pool:
            await _with_receiver_tables(pool)
            receipts = ReceiverLog(pool, "interagency")
            client = InteragencyPullClient(Smev3Client(url, key, trusted=trusted), receipts=receipts,
                                           options=PullClientOptions(recipient=recipient))
            await client.run(stop)
            _print_report(await receipts.report())

    bootstrap.run_until_signalled(main)


@receiver_group.command("report")
@click.argument("receiver", type=click.Choice(["portal", "interagency"]))
@click.pass_obj
def receiver_report_command(settings: Settings, receiver: str) -> None:
    """Received / duplicates / test messages / bad signatures of a reference receiver."""
    async def main():
        async with connected(settings) as pool:
            return await ReceiverLog(pool, receiver).report()
    _print_report(asyncio.run(main()))


def _print_report(report) -> None:
    table = Table(title=f"{report.receiver} receiver")
    for column in ("received", "duplicates", "test messages", "bad signatures"):
        table.add_column(column, justify="right")
    table.add_row(str(report.received), str(report.duplicates), str(report.test_messages),
                  str(report.bad_signatures))
    console.print(table)


commands = [infra_group, demo_command, chaos_command, receiver_group]
