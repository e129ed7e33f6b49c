"""``python -m bench.ingest_bench --processes 2``: two ingest servers share one port, and every event lands once.

The bench waits for two sockets listening on its port (a second server without
``EJX_HTTP_REUSE_PORT`` could not bind, and the run would fail), then exits 0
only if the topic holds every posted event exactly once and no request failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ingest_bench import BATCH, WARMUP_REQUESTS
from broker.devtools.demo.setup import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def test_two_ingest_servers_on_one_port_take_every_event_once(tmp_path: Path, kafka_bootstrap: str) -> None:
    figures_file = tmp_path / "ingest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingest_bench", "--requests", "30", "--processes", "2", "--port",
         str(free_port()), "--json", str(figures_file)], capture_output=True, text=True, timeout=180,
        env=os.environ)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(figures_file.read_text())

    assert figures["processes"] == 2 and figures["failures"] == 0
    expected = (30 + WARMUP_REQUESTS) * BATCH
    assert figures["on_topic"] == figures["distinct_on_topic"] == figures["expected_on_topic"] == expected
    assert figures["cpu_ms_per_event"] > 0
