"""``ejx infra up | down | status``: local Kafka and PostgreSQL, or the configured ones."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import click

from broker.devtools.infra.cluster import LocalKafka
from broker.devtools.infra.postgres import LocalPostgres, answers
from broker.domain.faults import Failure
from broker.infra import kafka
from broker.infra.postgres import masked_dsn
from broker.settings import Settings


def topics(settings: Settings) -> list[str]:
    """Every topic ejx reads or writes."""
    return [settings.events_topic, settings.dlq_topic, settings.interagency_topic]


async def _external_postgres_up(dsn: str) -> bool:
    try:
        return await answers(dsn)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
        return False


def _kafka_up(settings: Settings) -> bool:
    if settings.kafka_bootstrap is None:
        return LocalKafka(settings).is_up()
    try:
        asyncio.run(kafka.wait_ready(settings.kafka_bootstrap, timeout=10))
    except Failure:
        return False
    return True


def _postgres_up(settings: Settings) -> bool:
    if settings.database_url is None:
        return LocalPostgres(settings).is_up()
    return asyncio.run(_external_postgres_up(settings.database_url))


@click.group("infra")
def infra_group() -> None:
    """Local Kafka (KRaft, one or three nodes) and PostgreSQL under the state dir."""


@infra_group.command("up")
@click.option("--brokers", type=click.Choice(["1", "3"]), default=None,
              help="Kafka nodes to run locally (default: as recorded under the state dir, else 1); "
                   "3: topics with replication factor 3 and min.insync.replicas 2.")
@click.pass_obj
def up(settings: Settings, brokers: str | None) -> None:
    """Start what is not configured externally, wait until ready, create topics (idempotent)."""
    if brokers is not None:
        if settings.kafka_bootstrap is not None:
            raise Failure("--brokers is for the local Kafka; EJX_KAFKA_BOOTSTRAP names an existing one")
        settings = settings.model_copy(update={"kafka_brokers": int(brokers)})
    infra_up(settings)
    click.echo(f"kafka     {settings.kafka_address}")
    click.echo(f"postgres  {masked_dsn(settings.database_dsn)}")


def infra_up(settings: Settings) -> None:
    """Kafka and PostgreSQL ready to use: the configured ones, else local ones started here."""
    if settings.kafka_bootstrap is None:
        LocalKafka(settings).up()
    else:
        asyncio.run(kafka.wait_ready(settings.kafka_bootstrap, timeout=30))
    asyncio.run(kafka.ensure_topics(settings, topics(settings)))
    if settings.database_url is None:
        LocalPostgres(settings).up()
    elif not asyncio.run(_external_postgres_up(settings.database_url)):
        raise Failure(f"PostgreSQL at {masked_dsn(settings.database_url)} does not answer SELECT 1")


@infra_group.command("status")
@click.pass_obj
def status(settings: Settings) -> None:
    """Each component up or down with its address; exit 0 only if both are up."""
    states = {"kafka": (_kafka_up(settings), settings.kafka_address),
              "postgres": (_postgres_up(settings), masked_dsn(settings.database_dsn))}
    for name, (is_up, address) in states.items():
        external = " (external)" if (settings.kafka_bootstrap if name == "kafka" else settings.database_url) else ""
        click.echo(f"{name:<9} {'up' if is_up else 'down':<5} {address}{external}")
    if not all(is_up for is_up, _ in states.values()):
        sys.exit(1)


@infra_group.command("down")
@click.pass_obj
def down(settings: Settings) -> None:
    """Stop the local broker and cluster; leaves configured external ones alone."""
    if settings.kafka_bootstrap is None:
        LocalKafka(settings).down()
    if settings.database_url is None:
        LocalPostgres(settings).down()
    click.echo("stopped")


