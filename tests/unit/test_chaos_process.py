"""A chaos kill of a process that already exited on its own records that exit instead of hiding it."""

from __future__ import annotations

import os
from pathlib import Path

from broker.devtools.chaos.cluster import Process


async def test_a_kill_after_an_exit_of_its_own_records_the_exit_and_kills_a_started_process(tmp_path: Path) -> None:
    process = Process("router", ["--no-such-option"], dict(os.environ), tmp_path)  # ejx exits 2 at once
    process.start()
    exited = process.popen
    exited.wait()

    await process.kill()

    assert [found["returncode"] for found in process.unexpected_exits] == [2]
    assert process.killed and process.popen is not exited  # started again, and that one killed
    process.popen.wait()
