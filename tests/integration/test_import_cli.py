"""``ejx import csv`` and ``ejx import oneroster`` as an operator runs them (real Kafka and PostgreSQL)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.publisher import EventRecord, KafkaPublisher
from broker.app import bootstrap
from broker.app.cli import main
from tests.integration.ingest_support import VENDOR, read_topic, register

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

FIXTURES = Path(__file__).parent.parent / "fixtures" / "adapters"


@pytest.fixture
def ingest_settings(db_settings, fresh_topic):
    return db_settings.model_copy(update={"events_topic": fresh_topic})


@pytest.fixture
def env(ingest_settings) -> dict[str, str]:
    return {"EJX_DATABASE_URL": ingest_settings.database_dsn, "EJX_KAFKA_BOOTSTRAP": ingest_settings.kafka_address,
            "EJX_EVENTS_TOPIC": ingest_settings.events_topic}


def invoke(args: list[str], env: dict[str, str]):  # noqa: ANN201
    """The CLI runs its own event loop, so it gets a thread of its own."""
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


async def test_import_csv_twice_reports_rejects_and_adds_nothing_the_second_time(ingest_settings, db_pool, env,
                                                                                  tmp_path):
    await register(db_pool)
    export = tmp_path / "journal.csv"
    shutil.copy(FIXTURES / "grades_ru_cp1251.csv", export)

    first = await asyncio.to_thread(invoke, ["import", "csv", str(export), "--vendor", VENDOR], env)
    second = await asyncio.to_thread(invoke, ["import", "csv", str(export), "--vendor", VENDOR], env)

    assert first.exit_code == 0, first.output
    assert "6 row(s): 3 accepted, 0 already accepted before, 3 rejected" in first.stderr
    assert "6 row(s): 0 accepted, 3 already accepted before, 3 rejected" in second.stderr
    rejects = (tmp_path / "journal.csv.rejects.csv").read_text("utf-8").splitlines()
    assert rejects[0] == "line,code,path,reason" and len(rejects) == 4
    assert len(await read_topic(ingest_settings, ingest_settings.events_topic)) == 3


async def test_import_for_an_unknown_vendor_fails_in_one_line(ingest_settings, db_pool, env):
    await register(db_pool)
    result = await asyncio.to_thread(
        invoke, ["import", "csv", str(FIXTURES / "attendance_en.csv"), "--vendor", "nobody"], env)
    assert result.exit_code == 1
    assert result.stderr.startswith("SenderIsNotRegistered:")
    assert await read_topic(ingest_settings, ingest_settings.events_topic) == []


@pytest.mark.parametrize("form", ["json", "csv"])
async def test_import_oneroster_directory(ingest_settings, db_pool, env, tmp_path, form):
    await register(db_pool)
    bundle = tmp_path / "gradebook"
    shutil.copytree(FIXTURES / "oneroster" / form, bundle)
    first = await asyncio.to_thread(invoke, ["import", "oneroster", str(bundle), "--vendor", VENDOR], env)
    second = await asyncio.to_thread(invoke, ["import", "oneroster", str(bundle), "--vendor", VENDOR], env)
    assert first.exit_code == 0, first.output
    assert "5 row(s): 4 accepted" in first.stderr and "0 accepted, 4 already accepted before" in second.stderr
    skipped = "1 skipped (not submitted, or exempt without a score), 0 rejected"  # res-5: every row is counted
    assert skipped in " ".join(first.stderr.split()) and skipped in " ".join(second.stderr.split())
    records = await read_topic(ingest_settings, ingest_settings.events_topic)
    assert sorted(r.headers["event_type"] for r in records) == [
        "GradePosted", "GradePosted", "GradePosted", "GradeRetracted"]


@pytest.mark.parametrize("command", ["csv", "oneroster"])
async def test_a_rejects_file_that_cannot_be_written_fails_in_one_line_before_publishing(ingest_settings, db_pool,
                                                                                         env, tmp_path, command):
    """An export on a read-only share puts its default rejects file where nobody may write."""
    await register(db_pool)
    source = FIXTURES / "attendance_en.csv" if command == "csv" else FIXTURES / "oneroster" / "json"
    rejects = tmp_path / "missing-dir" / "rejects.csv"
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["import", command, str(source), "--vendor", VENDOR, "--rejects", str(rejects)],
        env=env)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert result.stderr.splitlines()[-1].startswith(f"Failure: cannot write the rejects file {rejects}: ")
    assert await read_topic(ingest_settings, ingest_settings.events_topic) == []


async def test_an_import_beside_a_served_ingest_with_an_instance_id_does_not_fence_it(ingest_settings, db_pool, env,
                                                                                       tmp_path):
    """EJX_INSTANCE_ID fixes the served ingest's transactional ids; an import on the same host reads the same
    variable, and with the same ids its producers fenced the live server's (ProducerFenced on its next request)."""
    await register(db_pool)
    served = ingest_settings.model_copy(update={"instance_id": "box-1"})
    publisher = KafkaPublisher(served, options=replace(bootstrap.served_publisher(served), producers=1))
    try:
        await publisher.publish([EventRecord(b"sch-1", b"<served-before/>", ())])
        export = tmp_path / "journal.csv"
        shutil.copy(FIXTURES / "grades_ru_cp1251.csv", export)
        result = await asyncio.to_thread(invoke, ["import", "csv", str(export), "--vendor", VENDOR],
                                         {**env, "EJX_INSTANCE_ID": "box-1"})
        assert result.exit_code == 0, result.output
        await publisher.publish([EventRecord(b"sch-1", b"<served-after/>", ())])
    finally:
        await publisher.stop()
    values = [record.value for record in await read_topic(ingest_settings, ingest_settings.events_topic)]
    assert b"<served-before/>" in values and b"<served-after/>" in values and len(values) == 5
