"""``ejx infra up`` recovers a local cluster whose postmaster died while a backend lived on.

A throwaway cluster of our own (Debian's initdb/pg_ctl, a temp state dir, a free port) — the suite's
shared PostgreSQL is never touched. The backend is kept busy in a CPU-bound query, which (unlike an
idle backend) does not notice its postmaster's death, as in issue 14's chaos run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg
import pytest

from broker.devtools.infra.postgres import LocalPostgres
from broker.settings import Settings
from tests.delivery_support import free_port

pytestmark = pytest.mark.usefixtures("postgres_server")


@pytest.fixture
def local_postgres(tmp_path) -> LocalPostgres:
    cluster = LocalPostgres(Settings(state_dir=tmp_path, postgres_port=free_port()))
    yield cluster
    cluster.down()
    for pid in cluster.orphaned_backends():  # a failed test must not leave a busy backend behind
        os.kill(pid, signal.SIGKILL)


async def test_up_after_the_postmaster_died_with_an_orphaned_backend_kills_only_ours_and_starts(
        local_postgres: LocalPostgres) -> None:
    await asyncio.to_thread(local_postgres.up)
    client = await asyncpg.connect(local_postgres.address)
    busy = asyncio.create_task(client.fetchval("SELECT count(*) FROM generate_series(1, 100000000000)"))
    await asyncio.sleep(0.5)
    postmaster = int((local_postgres.data_dir / "postmaster.pid").read_text().split()[0])
    orphans_before = set(local_postgres.orphaned_backends()) - {postmaster}
    os.kill(postmaster, signal.SIGKILL)
    await asyncio.sleep(0.5)
    assert set(local_postgres.orphaned_backends()) & orphans_before, "no backend outlived its postmaster"
    others = _other_postmasters(local_postgres)

    started = time.monotonic()
    await asyncio.to_thread(local_postgres.up)
    took = time.monotonic() - started

    assert await asyncio.to_thread(local_postgres.is_up)
    assert not set(local_postgres.orphaned_backends()) & orphans_before
    assert others and others <= _other_postmasters(local_postgres), "another cluster was touched"
    busy.cancel()
    client.terminate()
    print(f"recovered from an orphaned backend in {took:.1f} s")


def _other_postmasters(cluster: LocalPostgres) -> set[int]:
    """Postmasters of the other clusters on this machine (the suite's shared one among them): postgres
    processes whose parent is not one (their backends come and go with other people's clients)."""
    ours = set(cluster.orphaned_backends())
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        try:
            if _is_postgres(entry) and not _is_postgres(open(f"/proc/{entry}/stat").read().rpartition(")")[2].split()[1]):
                found.add(int(entry))
        except OSError:
            continue
    return found


def _is_postgres(pid: str) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "postgres"
    except OSError:
        return False
