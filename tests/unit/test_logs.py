"""JSON log lines: one object per line, readable by any JSON reader, whatever the values."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import structlog

from broker.ops import logs


def test_a_json_line_holds_every_value_even_those_json_has_no_form_for(capsys) -> None:
    before = structlog.get_config()
    logs.configure("info", json=True)
    try:
        message_id = uuid.uuid1()
        structlog.get_logger("test").info("relay.delivered", message_id=message_id, path=Path("/var/ejx"),
                                          counts={200: 3}, school="Школа № 5", at=datetime(2026, 12, 1, tzinfo=UTC))
        structlog.get_logger("test").debug("not.shown")
    finally:
        structlog.configure(**before)  # the capture's stream is closed after this test
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["event"] == "relay.delivered" and line["level"] == "info"
    assert line["message_id"] == str(message_id)
    assert line["path"] == repr(Path("/var/ejx"))
    assert line["counts"] == {"200": 3}
    assert line["school"] == "Школа № 5"
    assert line["at"] == "2026-12-01T00:00:00+00:00"
    assert datetime.fromisoformat(line["timestamp"]).tzinfo is not None
