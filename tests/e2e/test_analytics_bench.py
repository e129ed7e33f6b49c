"""``python -m bench.analytics_bench`` runs as deployed: several analytics processes in one group, checked.

A smoke run (small backlog, two processes): it must exit 0, which it does only
when the group committed past every record and school_activity counted each
event once, and it must report the CPU of the analytics processes it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def test_analytics_bench_applies_a_backlog_with_two_processes_and_counts_their_cpu(tmp_path: Path,
                                                                                    kafka_bootstrap: str) -> None:
    figures_file = tmp_path / "analytics.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.analytics_bench", "--events", "2000", "--processes", "2",
         "--json", str(figures_file)], capture_output=True, text=True, timeout=180, env=os.environ)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(figures_file.read_text())

    assert figures["processes"] == 2 and figures["events"] == 2000
    assert figures["events_per_s"] > 0 and figures["raw_consume_events_per_s"] > figures["events_per_s"]
    # 2,000 events cost the analytics processes far more than one 10 ms /proc tick.
    assert figures["cpu_ms_per_event"] > 0 and figures["postgres_cpu_ms_per_event"] >= 0
    assert [(t["name"], t["met"]) for t in figures["targets"]] == [
        ("analytics projections", figures["events_per_s"] >= 10_000)]
    assert "targets on this machine" in done.stdout
