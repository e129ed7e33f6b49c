"""A PostgreSQL cluster of our own (Debian's binaries), in the state dir, on its own port.

It never touches a system cluster. PostgreSQL refuses to run as root, so as root
the cluster runs as the ``postgres`` system user created by Debian's package.

A postmaster that died (SIGKILL, OOM) can leave backends running: they keep its
shared memory attached, and every later start fails with "pre-existing shared
memory block … is still in use". ``up`` recognises that answer, ends those
orphans — only processes of a postgres binary whose working directory is OUR
data directory (PostgreSQL's processes chdir there), never another cluster's —
and starts again.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import structlog

from broker.domain.faults import Failure
from broker.settings import Settings

log = structlog.get_logger(__name__)

DEBIAN_PACKAGE = "postgresql"
ROLE = "ejx"
DATABASE = "ejx"
SHARED_MEMORY_IN_USE = "pre-existing shared memory block"
"""What a start says while backends of a dead postmaster still hold its shared memory."""
ORPHANS_EXIT_S = 10.0


def find_bin_dir() -> Path | None:
    """Newest ``/usr/lib/postgresql/<major>/bin`` that has a server."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return candidates[-1].parent if candidates else None


def install_server() -> Path:
    """Install Debian's server package when we are root; otherwise say exactly what to run."""
    if os.geteuid() != 0:
        raise Failure(f"PostgreSQL server not found: run `sudo apt-get install -y {DEBIAN_PACKAGE}` "
                      "or set EJX_DATABASE_URL to an existing database")
    log.info("postgres.installing", package=DEBIAN_PACKAGE)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", DEBIAN_PACKAGE]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise Failure(f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise Failure(f"{DEBIAN_PACKAGE} installed but no server binary under /usr/lib/postgresql")
    return bin_dir


class LocalPostgres:
    """Owns ``<state_dir>/postgres``: data directory, socket directory and log."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.root = settings.state_dir.resolve() / "postgres"
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log_file = self.root / "postgres.log"

    @property
    def address(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self._settings.postgres_port}/{DATABASE}"

    def up(self) -> str:
        """Initialise on first use, start unless running, create the database; idempotent."""
        bin_dir = find_bin_dir() or install_server()
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self._hand_over(self.root)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        if not self._running(bin_dir):
            self._start(bin_dir)
        asyncio.run(self._ensure_database())
        return self.address

    def down(self) -> None:
        """Fast shutdown; waits until the postmaster is gone. Idempotent."""
        bin_dir = find_bin_dir()
        if bin_dir is None or not self._running(bin_dir):
            return
        self._run([bin_dir / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "-t", "60", "stop"])
        log.info("postgres.stopped", data_dir=str(self.data_dir))

    def kill(self) -> None:
        """SIGKILL the postmaster alone, as a crash would (the chaos suite): its backends are left as
        orphans, which ``up`` ends before it starts again."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if not _alive(pid):
            return
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.02)
        log.warning("postgres.killed", pid=pid)

    def is_up(self) -> bool:
        try:
            return asyncio.run(answers(self.address))
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            return False

    def _initdb(self, bin_dir: Path) -> None:
        self._run([bin_dir / "initdb", "-D", self.data_dir, "-U", ROLE, "--auth=trust",
                   "--encoding=UTF8", "--locale=C.UTF-8"])
        overrides = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self._settings.postgres_port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "200",
            "shared_buffers": "128MB",
            "logging_collector": "off",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# ejx local cluster\n")
            conf.writelines(f"{key} = {value}\n" for key, value in overrides.items())
        log.info("postgres.initialised", data_dir=str(self.data_dir))

    def _start(self, bin_dir: Path) -> None:
        logged = self.log_file.stat().st_size if self.log_file.exists() else 0
        done = self._pg_ctl_start(bin_dir)
        if done.returncode != 0 and SHARED_MEMORY_IN_USE in self._log_since(logged):
            orphans = self.orphaned_backends()
            log.warning("postgres.orphaned_backends", pids=orphans, data_dir=str(self.data_dir))
            _end(orphans)
            logged = self.log_file.stat().st_size if self.log_file.exists() else 0
            done = self._pg_ctl_start(bin_dir)
        if done.returncode != 0:
            raise Failure(f"PostgreSQL did not start on port {self._settings.postgres_port}: "
                          f"{done.stderr.strip()} {self._log_since(logged)[-1500:]}")
        log.info("postgres.started", port=self._settings.postgres_port, data_dir=str(self.data_dir))

    def _pg_ctl_start(self, bin_dir: Path) -> subprocess.CompletedProcess:
        # PostgreSQL removes a dead postmaster's lock files itself, unless it is a zombie nobody reaped.
        for lock in [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]:
            try:
                stale = not _alive(int(lock.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
            if stale:
                log.warning("postgres.stale_lock_file_removed", lock_file=str(lock))
                lock.unlink()
        return self._run([bin_dir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file,
                          "-w", "-t", "60", "-o", f"-p {self._settings.postgres_port}", "start"], check=False)

    def _log_since(self, offset: int) -> str:
        if not self.log_file.exists():
            return ""
        with self.log_file.open("rb") as log_file:
            log_file.seek(offset)
            return log_file.read().decode(errors="replace")

    def end_processes(self) -> None:
        """SIGKILL every PostgreSQL process of our data directory, the postmaster included, and wait until
        they are gone: the last resort after a test froze some of them (a fast shutdown would wait on a
        stopped backend for ever)."""
        _end(self.orphaned_backends())

    def orphaned_backends(self) -> list[int]:
        """Pids of PostgreSQL processes working in our data directory (none while ours is stopped cleanly)."""
        ours = self.data_dir.resolve()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if Path(os.readlink(entry / "cwd")) != ours or Path(os.readlink(entry / "exe")).name != "postgres":
                    continue
            except OSError:  # gone meanwhile, or not ours to inspect
                continue
            found.append(int(entry.name))
        return sorted(found)

    def _running(self, bin_dir: Path) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        if self._run([bin_dir / "pg_ctl", "-D", self.data_dir, "status"], check=False).returncode != 0:
            return False
        # pg_ctl takes a zombie for a live postmaster (a container whose init reaps nothing).
        try:
            return _alive(int((self.data_dir / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            return False

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(self.address.rsplit("/", 1)[0] + "/postgres", timeout=30)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()
        if not await answers(self.address):
            raise Failure(f"PostgreSQL at {self.address} does not answer SELECT 1")

    def _run(self, command: list, *, check: bool = True) -> subprocess.CompletedProcess:
        """Run a PostgreSQL tool, as the ``postgres`` user when we are root."""
        argv = [str(part) for part in command]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", _service_user(), "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise Failure(f"`{' '.join(argv)}` failed: {done.stderr.strip()[-800:]}")
        return done

    def _hand_over(self, path: Path) -> None:
        """As root, let the service user own the cluster's tree (and traverse to it)."""
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(_service_user())
        for directory in (path, self.socket_dir):
            shutil.chown(directory, user.pw_uid, user.pw_gid)
        for parent in path.parents:
            if parent.stat().st_mode & 0o001 == 0:
                parent.chmod(parent.stat().st_mode | 0o001)


async def answers(dsn: str) -> bool:
    """Whether the database at ``dsn`` answers ``SELECT 1``; connection errors propagate."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def _end(pids: list[int]) -> None:
    """SIGKILL the orphans (their postmaster is gone: nothing would act on a gentler signal's shutdown)
    and wait until they have exited and released the shared memory."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + ORPHANS_EXIT_S
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie, left to init, no longer holds shared memory)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _service_user() -> str:
    try:
        pwd.getpwnam("postgres")
    except KeyError as missing:
        raise Failure("running as root needs the `postgres` system user from Debian's package") from missing
    return "postgres"
