"""Operator commands against the test's own database: outbox status and redrive."""

from __future__ import annotations

import asyncio

import asyncpg
from click.testing import CliRunner

from broker.app.cli import main
from broker.xml.envelope import new_message_id


def _seed(database_url: str) -> None:
    async def seed():
        conn = await asyncpg.connect(database_url)
        try:
            for status, error in (("dead", "InvalidContent: HTTP 400"), ("dead", "Failure: HTTP 500"),
                                  ("pending", None), ("delivered", None)):
                await conn.execute(
                    """INSERT INTO outbox (message_id, destination, partition_key, payload, status, attempts,
                                           last_error, recipient, message_type)
                       VALUES ($1, 'portal', 'sch-1', '<x/>', $2, 3, $3, 'EPGU', 'GradePosted')""",
                    new_message_id(), status, error)
        finally:
            await conn.close()
    asyncio.run(seed())


def test_outbox_status_and_redrive(database_url, monkeypatch):
    monkeypatch.setenv("EJX_DATABASE_URL", database_url)
    _seed(database_url)
    runner = CliRunner()
    status = runner.invoke(main, ["outbox", "status"])
    assert status.exit_code == 0, status.output
    assert "portal" in status.output and "HTTP 400" in status.output
    summary_line = next(line for line in status.output.splitlines() if "portal" in line and "│" in line)
    assert [cell.strip() for cell in summary_line.split("│")[1:5]] == ["portal", "1", "1", "2"]

    assert runner.invoke(main, ["outbox", "redrive"]).exit_code != 0, "--dead is required"
    redrive = runner.invoke(main, ["outbox", "redrive", "--dead", "--destination", "interagency"])
    assert redrive.exit_code == 0 and "redriven: 0 row(s)" in redrive.output
    redrive = runner.invoke(main, ["outbox", "redrive", "--dead", "--destination", "portal",
                                   "--since", "2000-01-01T00:00:00"])
    assert redrive.exit_code == 0 and "redriven: 2 row(s)" in redrive.output
    again = runner.invoke(main, ["outbox", "status"])
    summary_line = next(line for line in again.output.splitlines() if "portal" in line and "│" in line)
    assert [cell.strip() for cell in summary_line.split("│")[1:5]] == ["portal", "3", "1", "0"]


def test_replay_needs_exactly_one_start(database_url, monkeypatch):
    monkeypatch.setenv("EJX_DATABASE_URL", database_url)
    result = CliRunner().invoke(main, ["replay", "--from-offset", "0", "--from-time", "2026-01-01T00:00:00"])
    assert result.exit_code != 0 and "exactly one" in result.output


def test_relay_refuses_a_batch_or_attempts_below_one(database_url, monkeypatch):
    """Checked before anything starts: --max-attempts 0 would kill rows at their first failure, --batch-size -1
    claim nothing and idle."""
    monkeypatch.setenv("EJX_DATABASE_URL", database_url)
    for option in ("--batch-size", "--max-attempts"):
        for value in ("0", "-1"):
            result = CliRunner().invoke(main, ["relay", option, value])
            assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output


def test_a_discarded_dead_row_frees_its_key_and_is_never_delivered(database_url, monkeypatch):
    """A dead row holds back its key; one that must never be delivered is discarded, and the key goes on."""
    from datetime import timedelta

    from broker.delivery import outbox

    monkeypatch.setenv("EJX_DATABASE_URL", database_url)
    dead, later, pending = new_message_id(), new_message_id(), new_message_id()

    async def seed_and_claim() -> list:
        conn = await asyncpg.connect(database_url)
        try:
            for message_id, status in ((dead, "dead"), (later, "pending")):
                await conn.execute(
                    """INSERT INTO outbox (message_id, destination, partition_key, payload, status, recipient,
                                           message_type)
                       VALUES ($1, 'portal', 'rec-1', '<x/>', $2, 'EPGU', 'GradePosted')""",
                    message_id, status)
            await conn.execute(
                "INSERT INTO outbox (message_id, destination, partition_key, payload, status) "
                "VALUES ($1, 'portal', 'rec-2', '<x/>', 'pending')", pending)
        finally:
            await conn.close()
        return await claimed()

    async def claimed() -> list:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                rows = await outbox.claim(conn, "portal", keys=10, lease=timedelta(seconds=30))
                await transaction.rollback()  # look, do not take
            return sorted(m.message_id for m in rows)
        finally:
            await pool.close()

    assert asyncio.run(seed_and_claim()) == [pending]  # rec-1 waits behind its dead row
    runner = CliRunner()
    unknown = new_message_id()
    refused = runner.invoke(main, ["outbox", "discard", str(later), str(unknown)])
    assert refused.exit_code == 1 and "discarded: 0 row(s)" in refused.stdout
    assert refused.stderr.splitlines()[-1] == (f"InvalidContent: no dead row to discard: {later} (pending); "
                                      f"{unknown} (not in the outbox)")
    refused = runner.invoke(main, ["outbox", "discard", "--destination", "interagency", str(dead)])
    assert refused.exit_code == 1 and f"for interagency: {dead} (not in the outbox)" in refused.stderr
    result = runner.invoke(main, ["outbox", "discard", str(dead)])
    assert result.exit_code == 0 and "discarded: 1 row(s)" in result.output
    assert asyncio.run(claimed()) == sorted([later, pending])
    assert "redriven: 0 row(s)" in runner.invoke(main, ["outbox", "redrive", "--dead"]).output


def test_redrive_since_without_a_zone_is_moscow_time(database_url, monkeypatch):
    """An operator types the wall-clock time they read: 10:00 is 10:00 in Moscow (07:00 UTC), not UTC."""

    monkeypatch.setenv("EJX_DATABASE_URL", database_url)
    before, after = new_message_id(), new_message_id()

    async def seed() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for message_id, created in ((before, "2026-10-14T06:30:00Z"), (after, "2026-10-14T08:00:00Z")):
                await conn.execute(
                    """INSERT INTO outbox (message_id, destination, partition_key, payload, status, created_at)
                       VALUES ($1, 'portal', $2, '<x/>', 'dead', $3::text::timestamptz)""",
                    message_id, str(message_id), created)
        finally:
            await conn.close()
    asyncio.run(seed())

    redrive = CliRunner().invoke(main, ["outbox", "redrive", "--dead", "--since", "2026-10-14T10:00:00"])
    assert redrive.exit_code == 0 and "redriven: 1 row(s)" in redrive.output, redrive.output

    async def pending() -> list:
        conn = await asyncpg.connect(database_url)
        try:
            return [row["message_id"] for row in await conn.fetch(
                "SELECT message_id FROM outbox WHERE status = 'pending'")]
        finally:
            await conn.close()
    assert asyncio.run(pending()) == [after]


def test_status_of_an_events_topic_that_does_not_exist_says_so_at_once(database_url, monkeypatch):
    """Before `ejx serve` created it (or with EJX_EVENTS_TOPIC mistyped): the topic is named, not a 30 s wait
    ending in "Kafka is unreachable"."""
    import time
    import uuid

    monkeypatch.setenv("EJX_DATABASE_URL", database_url)
    monkeypatch.setenv("EJX_EVENTS_TOPIC", f"ejx.test.missing.{uuid.uuid4().hex[:12]}")
    started = time.monotonic()
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1 and "does not exist" in result.stderr, result.output
    assert time.monotonic() - started < 10


async def test_status_lag_counts_from_the_log_start_not_offset_zero(database_url, monkeypatch, kafka_settings,
                                                                   fresh_topic):
    """Records retention deleted are not left to read: a group without a commit starts at the log's start."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    from broker.infra import kafka

    async with kafka.running(kafka.producer(kafka_settings)) as producer:
        for n in range(5):
            await producer.send_and_wait(fresh_topic, b"x%d" % n, partition=0)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.kafka_address)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(fresh_topic, 0): RecordsToDelete(before_offset=3)})
    finally:
        await admin.close()
    monkeypatch.setenv("EJX_DATABASE_URL", database_url)
    monkeypatch.setenv("EJX_EVENTS_TOPIC", fresh_topic)
    result = await asyncio.to_thread(CliRunner().invoke, main, ["status", "--group", "ejx-never-committed"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "ejx-never-committed" in line)
    assert [cell.strip() for cell in row.split("│")[1:6]] == ["ejx-never-committed", "0", "-", "5", "2"]
