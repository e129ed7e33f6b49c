"""``ejx chaos`` proves what it claims: a small run with kills of every target loses and doubles nothing, and
its count finds a loss and a doubling in real receiver records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from lxml import etree

from broker.devtools.chaos.cluster import KILLABLE
from broker.devtools.chaos.run import count_deliveries
from broker.devtools.receivers import ReceiverLog
from broker.domain.model import NAMESPACE
from broker.xml.envelope import EnvelopeHeader, MessageType

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def test_a_small_chaos_run_with_kills_of_every_target_loses_and_doubles_nothing(tmp_path: Path) -> None:
    report_file = tmp_path / "chaos.json"
    ejx = str(Path(sys.executable).with_name("ejx"))
    done = subprocess.run(
        [ejx, "chaos", "--rate", "20", "--seconds", "100", "--every", "4", "--seed", "3", "--drain-timeout", "240",
         "--json", str(report_file)],
        check=False, capture_output=True, text=True, timeout=600, env={**os.environ, "EJX_LOG_LEVEL": "warning"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(report_file.read_text())

    assert report["problems"] == []
    assert set(report["destinations"]) == {"portal", "interagency"}
    assert report["destinations"]["portal"]["acknowledged"] == 2000
    assert report["destinations"]["interagency"]["acknowledged"] == 400  # every 5th is a term grade
    for name, figures in report["destinations"].items():
        assert figures["lost"] == 0 and figures["doubled"] == 0, (name, figures)
        assert figures["received"] == figures["acknowledged"], (name, figures)
        assert figures["drain_s"] is not None
    assert set(report["kills"]) == set(KILLABLE) and all(n > 0 for n in report["kills"].values()), report["kills"]
    assert len(report["samples"]) >= 2


@pytest.mark.own_kafka
def test_killing_one_kafka_node_of_three_at_a_time_loses_nothing_and_restarts_no_component(tmp_path: Path) -> None:
    report_file = tmp_path / "chaos.json"
    ejx = str(Path(sys.executable).with_name("ejx"))
    done = subprocess.run(
        [ejx, "chaos", "--brokers", "3", "--targets", "kafka-broker", "--rate", "20", "--seconds", "60",
         "--every", "5", "--seed", "3", "--drain-timeout", "240", "--json", str(report_file)],
        check=False, capture_output=True, text=True, timeout=600, env={**os.environ, "EJX_LOG_LEVEL": "warning"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(report_file.read_text())

    assert report["problems"] == []
    for name, figures in report["destinations"].items():
        assert figures["lost"] == 0 and figures["doubled"] == 0, (name, figures)
        assert figures["received"] == figures["acknowledged"] > 0, (name, figures)
    roles = {victim["role"] for victim in report["kafka_nodes_killed"]}
    assert {"leader", "controller"} <= roles, report["kafka_nodes_killed"]
    assert report["unexpected_exits"] == {}, report["unexpected_exits"]


def _header(message_id: uuid.UUID) -> EnvelopeHeader:
    return EnvelopeHeader(message_id=message_id, message_type=MessageType.REQUEST, sender="EJX", recipient="EPGU",
                          sending_timestamp=datetime.now(UTC))


def _content(event_id: uuid.UUID) -> etree._Element:
    content = etree.Element(f"{{{NAMESPACE}}}GradePosted")
    etree.SubElement(content, f"{{{NAMESPACE}}}EventId").text = str(event_id)
    return content


async def test_the_count_finds_a_record_deleted_before_the_report_and_an_event_under_two_message_ids(
        db_pool: asyncpg.Pool) -> None:
    receipts = ReceiverLog(db_pool, "portal")
    events = [uuid.uuid4() for _ in range(5)]
    message_ids = [uuid.uuid1() for _ in events]
    for event_id, message_id in zip(events, message_ids):
        await receipts.record(_header(message_id), _content(event_id))
    await receipts.record(_header(message_ids[0]), _content(events[0]))  # a repeat: harmless
    async with db_pool.acquire() as conn:
        clean = await count_deliveries(conn, {"portal": set(events)}, drain_s={"portal": 1.0})
        await conn.execute("DELETE FROM receiver_messages WHERE message_id = $1", message_ids[1])
        await receipts.record(_header(uuid.uuid1()), _content(events[2]))  # the same event, a new MessageID
        await conn.execute("INSERT INTO outbox (message_id, destination, partition_key, payload) "
                           "VALUES ($1, 'portal', 'k', '\\x00'::bytea)", uuid.uuid1())  # one still undelivered
        broken = await count_deliveries(conn, {"portal": set(events)}, drain_s={"portal": None})

    assert (clean["portal"].received, clean["portal"].lost, clean["portal"].doubled) == (5, 0, 0)
    assert clean["portal"].repeats == 1
    assert (broken["portal"].received, broken["portal"].lost, broken["portal"].doubled) == (4, 1, 1)
    assert (clean["portal"].pending_rows, broken["portal"].pending_rows) == (0, 1)
