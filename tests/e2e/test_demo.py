"""The main job end to end: ``ejx demo`` on the real Kafka and PostgreSQL, checked against its input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from broker.devtools.simulation import simulate
from broker.domain.model import TermGradeFinalized
from broker.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

SIZE = {"schools": 3, "students_per_school": 6, "days": 1, "seed": 11}


def test_demo_delivers_every_accepted_event_once_and_refuses_the_bad_ones(tmp_path: Path, kafka_bootstrap: str,
                                                                         settings: Settings) -> None:
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ejx")), "demo", "--schools", str(SIZE["schools"]),
         "--students-per-school", str(SIZE["students_per_school"]), "--days", str(SIZE["days"]),
         "--seed", str(SIZE["seed"]), "--json", str(report_file)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "EJX_LOG_LEVEL": "warning"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_file.read_text())

    day = simulate(**SIZE)
    valid = [event for events in day.events.values() for event in events]
    term_grades = sum(isinstance(event, TermGradeFinalized) for event in valid)
    # Independent of the demo's own bookkeeping: what the generator made, by hand-written rules.
    assert report["generated_valid"] == len(valid)
    assert report["accepted"] == len(valid)
    expected_codes = Counter(bad.expected_code for bad in day.rejected)
    expected_codes.update({"SenderIsNotRegistered": 1, "InvalidContent": 1})  # no token; billion laughs
    assert report["rejected_by_code"] == dict(expected_codes)
    assert report["expected_deliveries"] == {"interagency": term_grades, "portal": len(valid)}
    assert report["received"] == {"interagency": term_grades, "portal": len(valid)}
    assert report["delivered"] == {"interagency": term_grades, "portal": len(valid)}
    assert report["lost"] == {"interagency": 0, "portal": 0}
    assert report["duplicates"] == {"interagency": 0, "portal": 0}
    assert report["bad_signatures"] == {"interagency": 0, "portal": 0}
    assert report["envelopes_signed"] == len(valid) + term_grades
    assert report["school_statuses"] == {"live": SIZE["schools"], "never_connected": 1}
    # The portal's e-diary requests over SMEV 3: three known pupils answered, the unknown one NO_DATA.
    assert report["diary_requests"] == {"answered": 3, "NO_DATA": 1}
    # ejx log verify over the run: every envelope, every SMEV 3 request, response and ack, unbroken.
    assert report["message_log_broken"] is None
    assert report["message_log_checked"] >= len(valid) + term_grades + 4 * 3
    assert report["problems"] == []
    # A passing run leaves no database and no topics behind.
    assert asyncio.run(_left_behind(settings, report["run_id"])) == ([], [])


async def _left_behind(settings: Settings, run_id: str) -> tuple[list[str], list[str]]:
    """The databases and topics named after the run that still exist."""
    admin = await asyncpg.connect(settings.database_dsn)
    try:
        databases = [row[0] for row in await admin.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE '%' || $1 || '%'", run_id)]
    finally:
        await admin.close()
    kafka_admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_address)
    await kafka_admin.start()
    try:
        topics = [name for name in await kafka_admin.list_topics() if run_id in name]
    finally:
        await kafka_admin.close()
    return databases, topics


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_kept_demo_stopped_by_sigterm_stops_ejx_and_its_receivers_first(kafka_bootstrap: str) -> None:
    demo = subprocess.Popen(
        [str(Path(sys.executable).with_name("ejx")), "demo", "--keep", "--schools", "1", "--students-per-school", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "EJX_LOG_LEVEL": "warning"})
    started: list[int] = []
    try:
        for line in demo.stdout:
            if line.startswith("Running:"):
                break
        else:
            pytest.fail(f"the demo ended before it kept running (exit {demo.wait()})")
        started = _children(demo.pid)
        assert len(started) == 4, started  # ejx serve, its router, the portal receiver, the interagency client
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 128 + signal.SIGTERM
        assert not [pid for pid in started if _alive(pid)]
    finally:
        if demo.poll() is None:
            demo.kill()
        for pid in started:  # orphans of a demo that died without stopping them
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
