"""``ejx log archive | verify | prune`` against the test's own database: Moscow times, exit statuses."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg
from click.testing import CliRunner

from broker.app.cli import main
from broker.xml.signing import keys
from tests.integration.message_log_support import (
    append_committed,
    as_superuser_without_triggers,
    entries,
)

MOSCOW = ZoneInfo("Europe/Moscow")


def _on(database_url: str, work) -> None:
    async def run():
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            await work(pool)
        finally:
            await pool.close()
    asyncio.run(run())


def test_archive_verify_and_prune_from_the_command_line(database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("EJX_DATABASE_URL", database_url)
    key, cert = keys.write_dev_pair(tmp_path / "keys")
    monkeypatch.setenv("EJX_KEY_FILE", str(key))
    monkeypatch.setenv("EJX_CERT_FILE", str(cert))
    monkeypatch.setenv("COLUMNS", "140")
    runner = CliRunner()

    _on(database_url, lambda pool: append_committed(pool, entries(25)))
    time.sleep(0.05)
    cut = datetime.now(MOSCOW).replace(tzinfo=None).isoformat()  # Moscow wall-clock time, no zone
    time.sleep(0.05)
    _on(database_url, lambda pool: append_committed(pool, entries(5)))

    live = runner.invoke(main, ["log", "verify"])
    assert live.exit_code == 0 and "ok: 30 record(s) verified" in live.output, live.output

    first = runner.invoke(main, ["log", "archive", "--until", cut, str(tmp_path / "one.tar")])
    assert first.exit_code == 0, first.output
    assert "1..25" in first.output, "a time without zone is Moscow time"
    shown = datetime.now(MOSCOW).strftime("%Y-%m-%d %H:")
    assert f"{shown}" in first.output and "MSK" in first.output
    second = runner.invoke(main, ["log", "archive", "--until", datetime.now(MOSCOW).isoformat(),
                                  str(tmp_path / "two.tar")])
    assert second.exit_code == 0 and "26..30" in second.output, second.output
    nothing = runner.invoke(main, ["log", "archive", "--until", datetime.now(MOSCOW).isoformat(),
                                   str(tmp_path / "three.tar")])
    assert nothing.exit_code == 0 and "nothing to archive" in nothing.output

    monkeypatch.setenv("EJX_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")  # offline: no database
    one, two = str(tmp_path / "one.tar"), str(tmp_path / "two.tar")
    ok = runner.invoke(main, ["log", "verify", "--cert", str(cert), one, two])
    assert ok.exit_code == 0 and "ok: 30 record(s) verified" in ok.output, ok.output
    swapped = runner.invoke(main, ["log", "verify", two, one])
    assert swapped.exit_code == 1 and "BROKEN one.tar: record 1: archive 1 does not follow archive 2" in swapped.output
    monkeypatch.setenv("EJX_DATABASE_URL", database_url)
    held = runner.invoke(main, ["log", "verify", "--live", "--cert", str(cert), one, two])
    assert held.exit_code == 0, held.output
    assert "ok: 30 record(s) verified (archives)" in held.output
    assert "ok: 30 record(s) verified (live table, chain head at record 30)" in held.output
    short = runner.invoke(main, ["log", "verify", "--live", "--cert", str(cert), one])  # the newest file left out
    assert short.exit_code == 1 and "archive row 2 (records 26…30) is not the file one.tar" in short.output

    pruned = runner.invoke(main, ["log", "prune", "--older-than", "0d"])
    assert pruned.exit_code == 0 and "pruned 30 archived record(s)" in pruned.output, pruned.output
    _on(database_url, lambda pool: append_committed(pool, entries(2)))
    _on(database_url, lambda pool: as_superuser_without_triggers(
        pool, "UPDATE message_log SET payload = 'x' WHERE sequence = 32"))
    broken = runner.invoke(main, ["log", "verify"])
    assert broken.exit_code == 1 and "BROKEN database: record 32: payload" in broken.output, broken.output
    assert "1 record(s) before it verified" in broken.output
    assert runner.invoke(main, ["log", "prune", "--older-than", "soon"]).exit_code == 2
